import type Database from 'better-sqlite3';

// Blind judging (/judge): each pair of images puts a candidate LoRA version beside the version served when the pair
// was drawn, same prompt and seed, on the side a seeded shuffle chose. The pair is recorded with that seed and side,
// so every vote can be counted for the version it really chose, and each member's vote on a pair counts once.

export const JUDGING_SIDES = ['left', 'right'] as const;
export type JudgingSide = (typeof JUDGING_SIDES)[number];

export interface JudgingPair {
  id: number;
  /** The generation job that draws the pair. */
  jobId: string;
  candidate: string;
  /** The version served when the pair was drawn; null: the base model (none was served). */
  opponent: string | null;
  candidateSide: JudgingSide;
  /** The seed of the shuffle that chose the sides. */
  shuffleSeed: number;
  prompt: string;
  seed: number;
  guildId: string | null;
  createdBy: string;
  createdAt: number;
}

/** Votes on the pairs of one candidate against one opponent. */
export interface JudgingTally {
  candidate: string;
  opponent: string | null;
  votes: number;
  /** Votes for the candidate's side. */
  wins: number;
}

export type VoteOutcome = { counted: true } | { counted: false; earlier: JudgingSide };

export interface Judging {
  /** Pairs recorded so far: the next pair's number in the sequence of shuffles is this plus one. */
  pairCount(): number;
  recordPair(pair: Omit<JudgingPair, 'id' | 'createdAt'>): JudgingPair;
  pairOfJob(jobId: string): JudgingPair | null;
  /** A member's vote on a pair counts once; a second one is refused with the first's side. */
  vote(pairId: number, userId: string, side: JudgingSide): VoteOutcome;
  /** One per candidate and opponent that has votes, the most voted first. */
  tallies(): JudgingTally[];
  tally(candidate: string, opponent: string | null): JudgingTally;
}

interface PairRow {
  id: number;
  job_id: string;
  candidate: string;
  opponent: string | null;
  candidate_side: JudgingSide;
  shuffle_seed: number;
  prompt: string;
  seed: number;
  guild_id: string | null;
  created_by: string;
  created_at: number;
}

export class SqliteJudging implements Judging {
  private readonly countPairs;
  private readonly insertPair;
  private readonly selectPairOfJob;
  private readonly insertVote;
  private readonly selectVote;
  private readonly selectTallies;
  private readonly voteInTransaction;

  constructor(db: Database.Database, private readonly now: () => number) {
    this.countPairs = db.prepare<[], { pairs: number }>('SELECT COUNT(*) AS pairs FROM judging_pairs');
    this.insertPair = db.prepare<Omit<PairRow, 'id'>>(`
      INSERT INTO judging_pairs (job_id, candidate, opponent, candidate_side, shuffle_seed, prompt, seed, guild_id, created_by, created_at)
      VALUES (@job_id, @candidate, @opponent, @candidate_side, @shuffle_seed, @prompt, @seed, @guild_id, @created_by, @created_at)`);
    this.selectPairOfJob = db.prepare<[string], PairRow>('SELECT * FROM judging_pairs WHERE job_id = ?');
    this.insertVote = db.prepare<[number, string, JudgingSide, number]>('INSERT INTO judging_votes (pair_id, user_id, side, voted_at) VALUES (?, ?, ?, ?)');
    this.selectVote = db.prepare<[number, string], { side: JudgingSide }>('SELECT side FROM judging_votes WHERE pair_id = ? AND user_id = ?');
    // `IS` rather than `=`: a pair against the base model has a NULL opponent, and NULL = NULL is not true in SQL.
    this.selectTallies = db.prepare<{ candidate: string | null; opponent: string | null; all: 0 | 1 }, JudgingTally>(`
      SELECT p.candidate AS candidate, p.opponent AS opponent, COUNT(*) AS votes, SUM(v.side = p.candidate_side) AS wins
      FROM judging_votes v JOIN judging_pairs p ON p.id = v.pair_id
      WHERE @all = 1 OR (p.candidate = @candidate AND p.opponent IS @opponent)
      GROUP BY p.candidate, p.opponent
      ORDER BY votes DESC, p.candidate, p.opponent`);
    this.voteInTransaction = db.transaction((pairId: number, userId: string, side: JudgingSide): VoteOutcome => {
      const earlier = this.selectVote.get(pairId, userId);
      if (earlier !== undefined) return { counted: false, earlier: earlier.side };
      this.insertVote.run(pairId, userId, side, this.now());
      return { counted: true };
    });
  }

  pairCount(): number {
    return this.countPairs.get()!.pairs;
  }

  recordPair(pair: Omit<JudgingPair, 'id' | 'createdAt'>): JudgingPair {
    const row: Omit<PairRow, 'id'> = {
      job_id: pair.jobId,
      candidate: pair.candidate,
      opponent: pair.opponent,
      candidate_side: pair.candidateSide,
      shuffle_seed: pair.shuffleSeed,
      prompt: pair.prompt,
      seed: pair.seed,
      guild_id: pair.guildId,
      created_by: pair.createdBy,
      created_at: this.now(),
    };
    return toPair({ id: Number(this.insertPair.run(row).lastInsertRowid), ...row });
  }

  pairOfJob(jobId: string): JudgingPair | null {
    const row = this.selectPairOfJob.get(jobId);
    return row === undefined ? null : toPair(row);
  }

  vote(pairId: number, userId: string, side: JudgingSide): VoteOutcome {
    return this.voteInTransaction.immediate(pairId, userId, side);
  }

  tallies(): JudgingTally[] {
    return this.selectTallies.all({ candidate: null, opponent: null, all: 1 });
  }

  tally(candidate: string, opponent: string | null): JudgingTally {
    return this.selectTallies.get({ candidate, opponent, all: 0 }) ?? { candidate, opponent, votes: 0, wins: 0 };
  }
}

function toPair(row: PairRow): JudgingPair {
  return {
    id: row.id,
    jobId: row.job_id,
    candidate: row.candidate,
    opponent: row.opponent,
    candidateSide: row.candidate_side,
    shuffleSeed: row.shuffle_seed,
    prompt: row.prompt,
    seed: row.seed,
    guildId: row.guild_id,
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}
