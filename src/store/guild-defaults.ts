import type Database from 'better-sqlite3';
import { checkDenoisingEnd, MAX_LORA_STRENGTH, MAX_STEPS } from '../common/generation-limits.js';
import { checkInteger, checkNumber, checkText, fail } from '../common/validation.js';

// Per-server defaults for /imagine and friends. null means "not set here": the bot falls back to its config.

export interface GuildDefaults {
  size: string | null;
  steps: number | null;
  guidanceScale: number | null;
  loraStrength: number | null;
  /** The share of the schedule the base runs before the refiner takes over; null: no refiner. */
  refinerHandoff: number | null;
}

export interface GuildDefaultsBook {
  get(guildId: string): GuildDefaults;
  /** Merges the changes into what is set (null clears a default); returns the result. */
  set(guildId: string, changes: Partial<GuildDefaults>, byUserId: string): GuildDefaults;
}

const MAX_SIZE_CHARS = 32;
/** The same bound the job contracts put on guidance. */
const MAX_GUIDANCE_SCALE = 100;

const CHECKS: { [K in keyof GuildDefaults]: (value: unknown) => NonNullable<GuildDefaults[K]> } = {
  size: (value) => checkText('size', value, MAX_SIZE_CHARS),
  steps: (value) => checkInteger('steps', value, 1, MAX_STEPS),
  guidanceScale: (value) => checkNumber('guidanceScale', value, 0, MAX_GUIDANCE_SCALE),
  loraStrength: (value) => checkNumber('loraStrength', value, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH),
  refinerHandoff: (value) => checkDenoisingEnd('refinerHandoff', value),
};

interface GuildDefaultsRow {
  guild_id: string;
  size: string | null;
  steps: number | null;
  guidance_scale: number | null;
  lora_strength: number | null;
  refiner_handoff: number | null;
  updated_by: string;
  updated_at: number;
}

export class SqliteGuildDefaultsBook implements GuildDefaultsBook {
  private readonly selectRow;
  private readonly upsertRow;
  private readonly setInTransaction;

  constructor(db: Database.Database, private readonly now: () => number) {
    this.selectRow = db.prepare<[string], GuildDefaultsRow>('SELECT * FROM guild_defaults WHERE guild_id = ?');
    this.upsertRow = db.prepare<GuildDefaultsRow>(`
      INSERT INTO guild_defaults (guild_id, size, steps, guidance_scale, lora_strength, refiner_handoff, updated_by, updated_at)
      VALUES (@guild_id, @size, @steps, @guidance_scale, @lora_strength, @refiner_handoff, @updated_by, @updated_at)
      ON CONFLICT (guild_id) DO UPDATE SET size = excluded.size, steps = excluded.steps,
        guidance_scale = excluded.guidance_scale, lora_strength = excluded.lora_strength, refiner_handoff = excluded.refiner_handoff,
        updated_by = excluded.updated_by, updated_at = excluded.updated_at`);
    this.setInTransaction = db.transaction((guildId: string, changes: Partial<GuildDefaults>, byUserId: string) => {
      const merged = { ...this.get(guildId), ...changes };
      this.upsertRow.run({
        guild_id: guildId,
        size: merged.size,
        steps: merged.steps,
        guidance_scale: merged.guidanceScale,
        lora_strength: merged.loraStrength,
        refiner_handoff: merged.refinerHandoff,
        updated_by: byUserId,
        updated_at: this.now(),
      });
      return merged;
    });
  }

  get(guildId: string): GuildDefaults {
    const row = this.selectRow.get(guildId);
    return {
      size: row?.size ?? null,
      steps: row?.steps ?? null,
      guidanceScale: row?.guidance_scale ?? null,
      loraStrength: row?.lora_strength ?? null,
      refinerHandoff: row?.refiner_handoff ?? null,
    };
  }

  set(guildId: string, changes: Partial<GuildDefaults>, byUserId: string): GuildDefaults {
    // Immediate: the merge reads what is set and must write before anyone else can.
    return this.setInTransaction.immediate(guildId, checkChanges(changes), byUserId);
  }
}

/** Only the keys given change; undefined is the same as leaving a key out. */
function checkChanges(changes: Partial<GuildDefaults>): Partial<GuildDefaults> {
  const checked: Partial<Record<keyof GuildDefaults, unknown>> = {};
  for (const [key, value] of Object.entries(changes)) {
    if (!Object.hasOwn(CHECKS, key)) fail('changes', key, `is not a guild default; they are ${Object.keys(CHECKS).join(', ')}`);
    if (value === undefined) continue;
    checked[key as keyof GuildDefaults] = value === null ? null : CHECKS[key as keyof GuildDefaults](value);
  }
  return checked as Partial<GuildDefaults>;
}
