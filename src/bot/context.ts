import type { JobProducer } from '../queue/producer.js';
import type { BotStore } from '../store/database.js';
import type { BotConfig } from './config.js';
import type { Curation } from './curation.js';
import type { Delivery } from './delivery.js';
import type { JobSubmitter } from './job-submitter.js';

/** What a command or button handler may use; built once by the bot at start. */
export interface BotContext {
  config: BotConfig;
  store: BotStore;
  producer: JobProducer;
  submitter: JobSubmitter;
  delivery: Delivery;
  curation: Curation;
  log: (line: string) => void;
}
