import {
  ButtonStyle, ComponentType, type APIActionRowComponent, type APIButtonComponent, type APIEmbed,
} from 'discord.js';
import type { GenerationJobResult, JobProgress, LoraChoice, TrainJobResult } from '../queue/contracts.js';
import type { JobStanding } from '../queue/producer.js';
import type { JobRecord } from '../store/jobs.js';
import { encodeButton } from './custom-ids.js';

// What a job's message says at each stage, as plain API payloads. Pure functions of the job's record and its state,
// so a view can be rebuilt after a restart from the database alone.

export const THUMBS_DOWN = '👎';
/** Discord's limits on what one embed may carry. */
const MAX_EMBED_DESCRIPTION_CHARS = 4096;
const MAX_FIELD_VALUE_CHARS = 1024;
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

export function clip(text: string, maxChars: number): string {
  return text.length <= maxChars ? text : `${text.slice(0, maxChars - 1)}…`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return 'under a second';
  const seconds = Math.round(ms / 1000);
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  return minutes < 90 ? `${minutes} min` : `${Math.round(minutes / 60)} h`;
}

function progressBar(step: number, total: number): string {
  const filled = total === 0 ? 0 : Math.round((step / total) * PROGRESS_BAR_CELLS);
  return '▰'.repeat(filled) + '▱'.repeat(PROGRESS_BAR_CELLS - filled);
}

function negativeText(job: JobRecord, request: GenerationRequestRecord): string {
  if (job.kind === 'compare') return 'none · "wrong" · "wrong"';
  if (job.kind === 'judge') return '"wrong" on both sides';
  if (job.kind === 'wrong' || job.kind === 'validate') return '"wrong"';
  const negative = request.settings.negativePrompt;
  return negative === null || negative === undefined ? 'none' : negative === '' ? '(empty)' : clip(negative, MAX_FIELD_VALUE_CHARS);
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
    ...(model === null ? [] : [{ name: 'Model', value: clip(model, MAX_FIELD_VALUE_CHARS), inline: true }]),
  ];
  return {
    title: `/${job.kind}`,
    description: clip(settings.prompt === '' ? '(empty prompt)' : settings.prompt, MAX_EMBED_DESCRIPTION_CHARS),
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

export function queuedView(job: JobRecord, standing: JobStanding | null): MessageView {
  if (job.kind === 'train') {
    // One training runs at a time, on whichever worker is free first: there is no place in a line to show.
    return { content: '⏳ Queued for the next free worker', embeds: [embedFor(job)], components: [cancelRow(job)], mentionUserIds: [] };
  }
  let status = '⏳ Queued';
  if (standing?.state === 'waiting') {
    status += ` · position ${standing.position}`;
    if (standing.etaMs !== null) status += ` · about ${formatDuration(standing.etaMs)}`;
  } else if (standing?.state === 'running') {
    status = '🎨 Starting…';
  }
  return { content: status, embeds: [embedFor(job)], components: [cancelRow(job)], mentionUserIds: [] };
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
export function resultView(job: JobRecord, result: GenerationJobResult, shown: DeliveredImage, inChannel: boolean): MessageView {
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
  if (result.panels.length > 1) {
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
