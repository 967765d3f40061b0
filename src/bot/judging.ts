import { serverDefaults } from '../commands/generation-options.js';
import { seedAt, seededShuffle } from '../common/seeded-shuffle.js';
import type { LoraChoice, LoraImageSettings } from '../queue/contracts.js';
import { randomSeed } from '../queue/producer.js';
import type { JobRecord } from '../store/jobs.js';
import type { JudgingPair, JudgingSide, JudgingTally } from '../store/judging.js';
import type { BotContext } from './context.js';
import { UserFacingError } from './errors.js';
import type { JobOrigin } from './job-submitter.js';
import { promoteVersion } from './promotion.js';

// /judge: members compare the newest candidate with the served version on pairs of images drawn with the same prompt
// and seed, left and right shuffled, without names until they vote. The votes give each candidate a win rate; with
// AUTO_PROMOTE_WIN_RATE and AUTO_PROMOTE_MIN_VOTES set, a candidate that reaches both is served without an admin.

export interface PairRequest {
  /** null: the validation prompts, in turn. */
  prompt: string | null;
  /** null: a fresh one. */
  seed: number | null;
}

/** What a vote's voter is told, and what the channel is told when the vote promoted the candidate. */
export interface VoteReply {
  content: string;
  /** The version an admin may promote from the reply; null when there is none to offer. */
  promotable: string | null;
  announcement: string | null;
}

/** Queues a blind pair of the newest candidate and the served version (the base model when none is served). */
export async function drawPair(context: BotContext, origin: JobOrigin, request: PairRequest): Promise<JobRecord> {
  const { trainings, judging } = context.store;
  const candidate = trainings.newestCandidate();
  if (candidate === null) throw new UserFacingError('There is no candidate to judge: every trained version is served, or none has been trained yet (/train makes one).');
  const opponent = trainings.served();
  const pairNumber = judging.pairCount() + 1;
  const prompt = request.prompt ?? validationPrompt(context, pairNumber);
  const defaults = serverDefaults({ guildId: origin.guildId }, context);
  const settings: LoraImageSettings = {
    prompt, seed: request.seed ?? randomSeed(), steps: defaults.steps, guidanceScale: defaults.guidanceScale,
    width: defaults.size.width, height: defaults.size.height, weighting: 'auto', denoisingEnd: defaults.denoisingEnd,
  };
  const shuffleSeed = seedAt(context.config.judgingSeed, pairNumber);
  const order = seededShuffle(['candidate', 'opponent'] as const, shuffleSeed);
  const sideOf = (who: 'candidate' | 'opponent'): LoraChoice | null => {
    const version = who === 'candidate' ? candidate.name : opponent;
    return version === null ? null : { version, strength: defaults.loraStrength };
  };
  // Recorded with the job, before the job can run: a vote always finds its pair.
  return context.submitter.submitJudging(origin, settings, order.map(sideOf), (record) => {
    judging.recordPair({
      jobId: record.jobId, candidate: candidate.name, opponent, candidateSide: order[0] === 'candidate' ? 'left' : 'right',
      shuffleSeed, prompt, seed: settings.seed, guildId: origin.guildId, createdBy: origin.userId,
    });
  });
}

function validationPrompt(context: BotContext, pairNumber: number): string {
  const prompts = context.store.trainings.validationPrompts();
  if (prompts.length === 0) throw new UserFacingError('Give a prompt: there are no validation prompts to judge with (admins add them with /lora validation add).');
  return prompts[(pairNumber - 1) % prompts.length]!.prompt;
}

/** Counts a member's vote on the pair drawn by `jobId`, names both sides to them, and promotes when the votes say so. */
export function recordVote(context: BotContext, jobId: string, voter: { id: string; isAdmin: boolean }, side: JudgingSide): VoteReply {
  const { judging, trainings } = context.store;
  const pair = judging.pairOfJob(jobId);
  if (pair === null) throw new UserFacingError('This pair is no longer known to the bot, so it cannot be voted on.');
  const outcome = judging.vote(pair.id, voter.id, side);
  const chosen = outcome.counted ? side : outcome.earlier;
  const tally = judging.tally(pair.candidate, pair.opponent);
  const lines = [
    outcome.counted
      ? `You chose the ${chosen} image: ${describeSide(pair, chosen)}. The other was ${describeSide(pair, otherSide(chosen))}.`
      : `Your vote on this pair counted already: the ${chosen} image, ${describeSide(pair, chosen)}.`,
    winRateLine(tally),
  ];
  const announcement = outcome.counted ? autoPromotion(context, pair, tally) : null;
  const promotable = voter.isAdmin && announcement === null && trainings.served() !== pair.candidate ? pair.candidate : null;
  return { content: lines.join('\n'), promotable, announcement };
}

export function versionName(version: string | null): string {
  return version === null ? 'the base model (no LoRA)' : `\`${version}\``;
}

function describeSide(pair: JudgingPair, side: JudgingSide): string {
  return side === pair.candidateSide ? `${versionName(pair.candidate)}, the candidate` : `${versionName(pair.opponent)}, served when the pair was drawn`;
}

function otherSide(side: JudgingSide): JudgingSide {
  return side === 'left' ? 'right' : 'left';
}

export function winRateText(tally: JudgingTally): string {
  return `won ${tally.wins} of ${tally.votes} blind vote${tally.votes === 1 ? '' : 's'} against ${versionName(tally.opponent)} (${Math.round((100 * tally.wins) / tally.votes)} %)`;
}

function winRateLine(tally: JudgingTally): string {
  return `\`${tally.candidate}\` has ${winRateText(tally)}.`;
}

/** The announcement when this vote took the candidate over both thresholds; null otherwise. */
function autoPromotion(context: BotContext, pair: JudgingPair, tally: JudgingTally): string | null {
  const rule = context.config.autoPromote;
  const { trainings } = context.store;
  // Votes against a version no longer served say nothing about what is served now; and a version an admin has
  // served before (and rolled back) comes back only by an admin's hand.
  if (rule === null || trainings.served() !== pair.opponent || trainings.everServed(pair.candidate)) return null;
  if (tally.votes < rule.minVotes || tally.wins / tally.votes < rule.winRate) return null;
  const promoted = promoteVersion(context, pair.candidate, null);
  return `🏆 \`${pair.candidate}\` has ${winRateText(tally)}, over the bar of ${Math.round(rule.winRate * 100)} % of at least ${rule.minVotes} votes: ${promoted}`;
}
