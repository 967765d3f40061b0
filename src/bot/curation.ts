import type { BotStore } from '../store/database.js';
import type { DatasetEntry } from '../store/dataset.js';
import type { KeptPanel } from '../store/images.js';
import type { Vote } from '../store/votes.js';

// 👎 votes decide which generated images enter the training set of the negative LoRA. The rules live here, apart from
// Discord's events, so they can be read (and tested) in one place.

export interface Voter {
  id: string;
  isBot: boolean;
  isAdmin: boolean;
}

/** Why a reaction or button press is not a vote; null when it is one. */
export function whyNotAVote(voter: Voter, botUserId: string, messageAuthorId: string | null): string | null {
  if (voter.id === botUserId) return 'the bot’s own reaction';
  if (voter.isBot) return 'a vote by a bot';
  if (messageAuthorId !== null && messageAuthorId !== botUserId) return 'a message the bot did not write';
  return null;
}

/** An image is curated once enough distinct members voted, or any admin did. */
export function qualifies(votes: readonly Vote[], votesToCurate: number): boolean {
  return votes.length >= votesToCurate || votes.some((vote) => vote.isAdmin);
}

export interface VoteOutcome {
  counted: boolean;
  /** An admin removed the image from the set with /dataset remove; votes no longer bring it back. */
  rejected: boolean;
  votes: number;
  needed: number;
  entry: DatasetEntry | null;
}

export class Curation {
  constructor(
    private readonly store: BotStore,
    private readonly votesToCurate: number,
    private readonly log: (line: string) => void,
  ) {}

  /** The kept panels a message shows; empty for a message that is not a delivered result (or whose panels expired). */
  panelsOf(messageId: string): KeptPanel[] {
    return this.store.images.byMessage(messageId);
  }

  vote(panel: KeptPanel, voter: Voter): VoteOutcome {
    const { votes, dataset } = this.store;
    const counted = votes.add({ jobId: panel.jobId, panelIndex: panel.panelIndex, userId: voter.id, isAdmin: voter.isAdmin });
    const current = votes.of(panel.jobId, panel.panelIndex);
    let entry = dataset.find(panel.jobId, panel.panelIndex);
    const rejected = dataset.isRejected(panel.jobId, panel.panelIndex);
    if (!rejected && qualifies(current, this.votesToCurate)) {
      const isNew = entry === null;
      entry = dataset.curate(panel, current);
      if (isNew) this.log(`curated job ${panel.jobId} panel ${panel.panelIndex + 1} as dataset entry ${entry.id} (${current.length} vote(s))`);
    }
    return { counted, rejected, votes: current.length, needed: this.votesToCurate, entry };
  }

  /** Takes a vote back; an entry whose remaining votes no longer qualify leaves the training set again. */
  retract(panel: KeptPanel, voterId: string): VoteOutcome {
    const { votes, dataset } = this.store;
    const removed = votes.remove({ jobId: panel.jobId, panelIndex: panel.panelIndex, userId: voterId });
    const current = votes.of(panel.jobId, panel.panelIndex);
    let entry = dataset.find(panel.jobId, panel.panelIndex);
    if (removed && entry !== null) {
      if (qualifies(current, this.votesToCurate)) {
        entry = dataset.curate(panel, current);
      } else {
        dataset.remove(entry.id);
        this.log(`dataset entry ${entry.id} (job ${panel.jobId} panel ${panel.panelIndex + 1}) removed: its votes were taken back`);
        entry = null;
      }
    }
    return { counted: removed, rejected: dataset.isRejected(panel.jobId, panel.panelIndex), votes: current.length, needed: this.votesToCurate, entry };
  }
}
