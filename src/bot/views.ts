import {
  ButtonStyle, ComponentType, escapeMarkdown, type APIActionRowComponent, type APIButtonComponent, type APIEmbed,
} from 'discord.js';
import type { GenerationJobResult, JobProgress, LoraChoice, TrainJobResult } from '../queue/contracts.js';
import type { JobStanding } from '../queue/producer.js';
import type { JobRecord } from '../store/jobs.js';
import { encodeButton } from './custom-ids.js';

// What a job's message says at each stage, as plain API payloads. Pure functions of the job's record and its state,
// so a view can be rebuilt after a restart from the database alone.

export const THUMBS_DOWN = '👎';
/** Discord's limits on what one message may carry, in characters. */
const MAX_CONTENT_CHARS = 2000;
const MAX_EMBED_TITLE_CHARS = 256;
const MAX_EMBED_DESCRIPTION_CHARS = 4096;
const MAX_FIELD_NAME_CHARS = 256;
const MAX_FIELD_VALUE_CHARS = 1024;
const MAX_FOOTER_CHARS = 2048;
const MAX_EMBEDS_TOTAL_CHARS = 6000;
const PROGRESS_BAR_CELLS = 12;

export interface MessageView {
  content: string;
  embeds: APIEmbed[];
  components: APIActionRowComponent<APIButtonComponent>[];
  /** Only these user ids may be pinged by the message. */
  mentionUserIds: string[];
}

export interface GenerationRequestRecord {
  settings: {
    prompt: string;
    negativePrompt?: string | null;
    seed: number;
    steps: number;
    guidanceScale: number;
    width: number;
    height: number;
    denoisingEnd?: number | null;
  };
  lora?: LoraChoice;
  /** A validation's versions, beside the base. */
  versions?: LoraChoice[];
}

export interface TrainRequestRecord {
  baseVersion: string | null;
  steps: number;
  /** Absent from trainings queued before snapshots existed. */
  seed?: number;
  images?: number;
}

/** Discord counts characters, not UTF-16 units: an emoji is one. */
function characters(text: string | undefined): number {
  return text === undefined ? 0 : [...text].length;
}

export function clip(text: string, maxChars: number): string {
  const chars = [...text];
  return chars.length <= maxChars ? text : `${chars.slice(0, maxChars - 1).join('')}…`;
}

/**
 * A member's text (a prompt) shown as typed: Discord would otherwise render its markdown, so a prompt could hide a
 * masked link behind innocent words or dress itself up as the bot's own headings.
 */
export function literal(text: string): string {
  return escapeMarkdown(text, { heading: true, bulletedList: true, numberedList: true, maskedLink: true });
}

function embedCharacters(embed: APIEmbed): number {
  return characters(embed.title) + characters(embed.description) + characters(embed.footer?.text) + characters(embed.author?.name)
    + (embed.fields ?? []).reduce((sum, field) => sum + characters(field.name) + characters(field.value), 0);
}

/**
 * The view cut down to what Discord accepts: each part within its own limit, then the embeds within their 6 000
 * characters together, taken from the longest texts (the prompts) first. A message over a limit is refused whole.
 */
export function withinDiscordLimits(view: MessageView): MessageView {
  const embeds = view.embeds.map((embed): APIEmbed => ({
    ...embed,
    ...(embed.title === undefined ? {} : { title: clip(embed.title, MAX_EMBED_TITLE_CHARS) }),
    ...(embed.description === undefined ? {} : { description: clip(embed.description, MAX_EMBED_DESCRIPTION_CHARS) }),
    ...(embed.footer === undefined ? {} : { footer: { ...embed.footer, text: clip(embed.footer.text, MAX_FOOTER_CHARS) } }),
    ...(embed.fields === undefined ? {} : {
      fields: embed.fields.map((field) => ({ ...field, name: clip(field.name, MAX_FIELD_NAME_CHARS), value: clip(field.value, MAX_FIELD_VALUE_CHARS) })),
    }),
  }));
  let excess = embeds.reduce((sum, embed) => sum + embedCharacters(embed), 0) - MAX_EMBEDS_TOTAL_CHARS;
  while (excess > 0) {
    const texts = embeds.flatMap((embed) => [
      { length: characters(embed.description), cut: (keep: number) => { embed.description = clip(embed.description!, keep); } },
      ...(embed.fields ?? []).map((field) => ({ length: characters(field.value), cut: (keep: number) => { field.value = clip(field.value, keep); } })),
    ]);
    const longest = texts.reduce((a, b) => (b.length > a.length ? b : a));
    // Every text keeps a little of itself; past that, the footer and titles are all that is left to count.
    const keep = Math.max(longest.length - excess, Math.min(longest.length, 100));
    if (keep === longest.length) break;
    longest.cut(keep);
    excess -= longest.length - keep;
  }
  return { ...view, content: clip(view.content, MAX_CONTENT_CHARS), embeds };
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return 'under a second';
  const seconds = Math.round(ms / 1000);
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  return minutes < 90 ? `${minutes} min` : `${Math.round(minutes / 60)} h`;
}

function progressBar(step: number, total: number): string {
  // Progress comes through Redis from any worker or trainer: a step past the total still draws a full bar.
  const filled = total > 0 ? Math.min(PROGRESS_BAR_CELLS, Math.max(0, Math.round((step / total) * PROGRESS_BAR_CELLS))) : 0;
  return '▰'.repeat(filled) + '▱'.repeat(PROGRESS_BAR_CELLS - filled);
}

function negativeText(job: JobRecord, request: GenerationRequestRecord): string {
  if (job.kind === 'compare') return 'none · "wrong" · "wrong"';
  if (job.kind === 'judge') return '"wrong" on both sides';
  if (job.kind === 'wrong' || job.kind === 'validate') return '"wrong"';
  const negative = request.settings.negativePrompt;
  return negative === null || negative === undefined ? 'none' : negative === '' ? '(empty)' : clip(literal(negative), MAX_FIELD_VALUE_CHARS);
}

function loraText(lora: LoraChoice | null | undefined): string {
  return lora ? `${lora.version} ×${lora.strength}` : 'none';
}

function generationEmbed(job: JobRecord, model: string | null = null): APIEmbed {
  const request = job.request as unknown as GenerationRequestRecord;
  const { settings } = request;
  const fields = [
    { name: 'Negative prompt', value: negativeText(job, request), inline: false },
    { name: 'Seed', value: String(settings.seed), inline: true },
    { name: 'Steps', value: String(settings.steps), inline: true },
    { name: 'Guidance', value: String(settings.guidanceScale), inline: true },
    { name: 'Size', value: `${settings.width}×${settings.height}`, inline: true },
    // A blind pair names no version until a member has voted (privately).
    ...(job.kind === 'judge' ? [] : [{ name: 'LoRA', value: request.versions ? request.versions.map(loraText).join(' vs ') : loraText(request.lora), inline: true }]),
    ...(settings.denoisingEnd == null ? [] : [{ name: 'Refiner', value: `the last ${Math.round((1 - settings.denoisingEnd) * 100)} % of the steps (from ${settings.denoisingEnd})`, inline: true }]),
    ...(model === null ? [] : [{ name: 'Model', value: clip(model, MAX_FIELD_VALUE_CHARS), inline: true }]),
  ];
  return {
    title: `/${job.kind}`,
    description: clip(literal(settings.prompt), MAX_EMBED_DESCRIPTION_CHARS),
    fields,
    footer: { text: `job ${job.jobId} · for ${clip(job.userName, 80)}` },
  };
}

function trainEmbed(job: JobRecord): APIEmbed {
  const request = job.request as unknown as TrainRequestRecord;
  return {
    title: '/train',
    description: `A new "wrong" LoRA version from ${request.images === undefined ? 'the curated set' : `the ${request.images} image(s) of the training set as it was at /train`},`
      + ` ${request.steps} steps${request.seed === undefined ? '' : `, seed ${request.seed}`}, starting from ${request.baseVersion ?? 'scratch'}.`,
    footer: { text: `job ${job.jobId} · for ${clip(job.userName, 80)}` },
  };
}

function embedFor(job: JobRecord): APIEmbed {
  return job.kind === 'train' ? trainEmbed(job) : generationEmbed(job);
}

type CustomIdButtonStyle = ButtonStyle.Primary | ButtonStyle.Secondary | ButtonStyle.Success | ButtonStyle.Danger;

function button(customId: string, label: string, style: CustomIdButtonStyle, emoji?: string): APIButtonComponent {
  return { type: ComponentType.Button, custom_id: customId, label, style, ...(emoji ? { emoji: { name: emoji } } : {}) };
}

function row(...buttons: APIButtonComponent[]): APIActionRowComponent<APIButtonComponent> {
  return { type: ComponentType.ActionRow, components: buttons };
}

function cancelRow(job: JobRecord): APIActionRowComponent<APIButtonComponent> {
  return row(button(encodeButton({ kind: 'cancel', jobId: job.jobId }), 'Cancel', ButtonStyle.Danger, '❌'));
}

/** Serves the candidate of `jobId` (a training's, or a judged pair's); admins only, checked when pressed. */
export function promoteButton(jobId: string, version: string): APIButtonComponent {
  return button(encodeButton({ kind: 'promote', jobId }), `Promote ${version}`, ButtonStyle.Success, '⬆️');
}

/** Where a generation stands, as its message's first line. */
export function standingLine(standing: JobStanding): string {
  if (standing.state === 'running') return '🎨 Starting…';
  if (standing.state !== 'waiting') return '⏳ Queued';
  return `⏳ Queued · position ${standing.position}${standing.etaMs === null ? '' : ` · about ${formatDuration(standing.etaMs)}`}`;
}

export function queuedView(job: JobRecord, standing: JobStanding | null): MessageView {
  if (job.kind === 'train') {
    // One training runs at a time, on whichever worker is free first: there is no place in a line to show.
    return { content: '⏳ Queued for the next free worker', embeds: [embedFor(job)], components: [cancelRow(job)], mentionUserIds: [] };
  }
  return { content: standing === null ? '⏳ Queued' : standingLine(standing), embeds: [embedFor(job)], components: [cancelRow(job)], mentionUserIds: [] };
}

export function progressView(job: JobRecord, progress: JobProgress): MessageView {
  const verb = job.kind === 'train' ? '🧪 Training' : '🎨 Generating';
  // A training reports step 0 (with its contact sheet) before the models of its first step are ready.
  const content = progress.step === 0
    ? `${verb} · preparing the first step (${progress.totalSteps} to go)`
    : `${verb} · ${progressBar(progress.step, progress.totalSteps)} step ${progress.step}/${progress.totalSteps}`
      + (progress.loss === undefined ? '' : ` · loss ${progress.loss.toFixed(4)}`)
      + (progress.step < progress.totalSteps ? ` · about ${formatDuration(progress.etaMs)} left` : ' · finishing');
  return { content, embeds: [embedFor(job)], components: [cancelRow(job)], mentionUserIds: [] };
}

export interface DeliveredImage {
  /** The attachment's file name, which `attachment://` in the embed refers to. */
  filename: string;
}

/**
 * The finished job: its image(s) are attached by the caller; the embed shows `shown`. `inChannel` when it is posted
 * as a channel message because the interaction expired: it then mentions the member, who is no longer looking at it.
 */
export function resultView(job: JobRecord, result: GenerationJobResult, shown: DeliveredImage, { inChannel, votes }: { inChannel: boolean; votes: boolean }): MessageView {
  const embed: APIEmbed = {
    ...generationEmbed(job, result.model),
    image: { url: `attachment://${shown.filename}` },
  };
  // A pair's notices name the LoRA files it loaded, which would give its sides away.
  if (result.notices.length > 0 && job.kind !== 'judge') {
    embed.fields = [...(embed.fields ?? []), { name: 'Notes', value: clip(result.notices.join('\n'), MAX_FIELD_VALUE_CHARS), inline: false }];
  }
  if (job.kind === 'judge') {
    const mention = inChannel ? `<@${job.userId}> ` : '';
    return {
      content: `${mention}⚖️ Blind pair: which image is better? One side is the served "wrong" LoRA, the other a candidate, same prompt and seed. Your vote tells you which was which.`,
      embeds: [embed],
      components: [row(
        button(encodeButton({ kind: 'judge', jobId: job.jobId, side: 'left' }), 'Left is better', ButtonStyle.Primary, '⬅️'),
        button(encodeButton({ kind: 'judge', jobId: job.jobId, side: 'right' }), 'Right is better', ButtonStyle.Primary, '➡️'),
      )],
      mentionUserIds: inChannel ? [job.userId] : [],
    };
  }
  // A validation draws fixed prompts and seeds for a candidate: nothing to re-roll or compare.
  const components = [];
  if (job.kind !== 'validate') {
    const actions = [button(encodeButton({ kind: 'rerun', jobId: job.jobId }), 'New seed', ButtonStyle.Secondary, '🔁')];
    if (job.kind !== 'compare') actions.push(button(encodeButton({ kind: 'compare', jobId: job.jobId }), 'Compare this seed', ButtonStyle.Secondary, '🆚'));
    components.push(row(...actions));
  }
  if (votes && result.panels.length > 1) {
    components.push(row(...result.panels.map((_, panelIndex) =>
      button(encodeButton({ kind: 'vote', jobId: job.jobId, panelIndex }), `Panel ${panelIndex + 1} is wrong`, ButtonStyle.Secondary, THUMBS_DOWN))));
  }
  const validated = (job.request as unknown as GenerationRequestRecord).versions ?? [];
  const content = job.kind === 'validate'
    ? `<@${job.userId}> 🧪 Validation of \`${validated.at(-1)?.version}\`: the base, ${validated.length > 1 ? `the served \`${validated[0]!.version}\` and the candidate` : 'and the candidate'}, same prompt and seed, negative "wrong".`
    : inChannel ? `<@${job.userId}> your /${job.kind} is ready (the command had expired, so it is posted here).` : '';
  return { content, embeds: [embed], components, mentionUserIds: inChannel || job.kind === 'validate' ? [job.userId] : [] };
}

export function trainedView(job: JobRecord, result: TrainJobResult, lossCurve: DeliveredImage | null, inChannel: boolean): MessageView {
  const loss = result.finalLoss === null ? '' : ` · final loss ${result.finalLoss.toFixed(4)}`;
  const content = `${inChannel ? `<@${job.userId}> ` : ''}✅ Trained candidate version \`${result.version}\` · ${result.steps} steps${loss} · ${formatDuration(result.durationMs)}.`
    + ` Members compare it with the served version blind with /judge; an admin serves it with the button or \`/lora promote version:${result.version}\`.`;
  const embed: APIEmbed = { ...embedFor(job), ...(lossCurve === null ? {} : { image: { url: `attachment://${lossCurve.filename}` } }) };
  return { content, embeds: [embed], components: [row(promoteButton(job.jobId, result.version))], mentionUserIds: inChannel ? [job.userId] : [] };
}

/** A job that ended without a result. The reason goes to the member privately; the channel only learns that it did. */
export function endedView(job: JobRecord, outcome: 'failed' | 'cancelled', inChannel: boolean): MessageView {
  const mention = inChannel ? `<@${job.userId}> ` : '';
  const content = outcome === 'cancelled' ? `${mention}❌ Cancelled.` : `${mention}⚠️ This job failed.`;
  return { content, embeds: [embedFor(job)], components: [], mentionUserIds: inChannel ? [job.userId] : [] };
}
