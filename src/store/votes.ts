import type Database from 'better-sqlite3';
import { fail } from '../common/validation.js';

// 👎 votes per kept panel. They go with the panel when the sweep removes it; a curated panel carries its voters
// into the training set.

export interface Vote {
  userId: string;
  isAdmin: boolean;
  votedAt: number;
}

export interface VoteBook {
  /** false when this user already voted for this panel. */
  add(vote: { jobId: string; panelIndex: number; userId: string; isAdmin: boolean }): boolean;
  /** false when there was no such vote. */
  remove(vote: { jobId: string; panelIndex: number; userId: string }): boolean;
  /** Oldest first. */
  of(jobId: string, panelIndex: number): Vote[];
}

interface VoteRow {
  user_id: string;
  is_admin: 0 | 1;
  voted_at: number;
}

export class SqliteVoteBook implements VoteBook {
  private readonly insertRow;
  private readonly deleteRow;
  private readonly selectVotes;
  private readonly selectPanel;

  constructor(db: Database.Database, private readonly now: () => number) {
    this.insertRow = db.prepare<[string, number, string, 0 | 1, number]>(`
      INSERT INTO panel_votes (job_id, panel_index, user_id, is_admin, voted_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (job_id, panel_index, user_id) DO NOTHING`);
    this.deleteRow = db.prepare<[string, number, string]>(
      'DELETE FROM panel_votes WHERE job_id = ? AND panel_index = ? AND user_id = ?');
    this.selectVotes = db.prepare<[string, number], VoteRow>(
      'SELECT user_id, is_admin, voted_at FROM panel_votes WHERE job_id = ? AND panel_index = ? ORDER BY voted_at, rowid');
    this.selectPanel = db.prepare<[string, number], { job_id: string }>(
      'SELECT job_id FROM kept_panels WHERE job_id = ? AND panel_index = ?');
  }

  add(vote: { jobId: string; panelIndex: number; userId: string; isAdmin: boolean }): boolean {
    if (this.selectPanel.get(vote.jobId, vote.panelIndex) === undefined) {
      fail('vote', { jobId: vote.jobId, panelIndex: vote.panelIndex }, 'is for a panel that is not kept');
    }
    return this.insertRow.run(vote.jobId, vote.panelIndex, vote.userId, vote.isAdmin ? 1 : 0, this.now()).changes === 1;
  }

  remove(vote: { jobId: string; panelIndex: number; userId: string }): boolean {
    return this.deleteRow.run(vote.jobId, vote.panelIndex, vote.userId).changes === 1;
  }

  of(jobId: string, panelIndex: number): Vote[] {
    return this.selectVotes.all(jobId, panelIndex).map((row) => ({
      userId: row.user_id,
      isAdmin: row.is_admin === 1,
      votedAt: row.voted_at,
    }));
  }
}
