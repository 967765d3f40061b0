import { readFileSync } from 'node:fs';

// From dist/src/common (or src/common under a TypeScript runner) up to the package root.
const packageJson = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

export const WRONGBOT_VERSION: string = packageJson.version;
