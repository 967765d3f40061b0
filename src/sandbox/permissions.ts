// Permission bits the sandbox reasons about (a subset of Discord's; values from Discord's permission table).

export const Permission = {
  CreateInstantInvite: 1n << 0n,
  Administrator: 1n << 3n,
  ManageGuild: 1n << 5n,
  AddReactions: 1n << 6n,
  Stream: 1n << 9n,
  ViewChannel: 1n << 10n,
  SendMessages: 1n << 11n,
  ManageMessages: 1n << 13n,
  EmbedLinks: 1n << 14n,
  AttachFiles: 1n << 15n,
  ReadMessageHistory: 1n << 16n,
  MentionEveryone: 1n << 17n,
  UseExternalEmojis: 1n << 18n,
  Connect: 1n << 20n,
  Speak: 1n << 21n,
  UseVAD: 1n << 25n,
  ChangeNickname: 1n << 26n,
  UseApplicationCommands: 1n << 31n,
  RequestToSpeak: 1n << 32n,
  CreatePublicThreads: 1n << 35n,
  CreatePrivateThreads: 1n << 36n,
  UseExternalStickers: 1n << 37n,
  SendMessagesInThreads: 1n << 38n,
  UseEmbeddedActivities: 1n << 39n,
  UseSoundboard: 1n << 42n,
  UseExternalSounds: 1n << 45n,
  SendVoiceMessages: 1n << 46n,
  SendPolls: 1n << 49n,
  UseExternalApps: 1n << 50n,
} as const;

/** What a new Discord server grants @everyone: chatting, reacting, files, voice, commands — no moderation. */
export const DEFAULT_EVERYONE_PERMISSIONS = [
  'CreateInstantInvite', 'AddReactions', 'Stream', 'ViewChannel', 'SendMessages', 'EmbedLinks', 'AttachFiles',
  'ReadMessageHistory', 'MentionEveryone', 'UseExternalEmojis', 'Connect', 'Speak', 'UseVAD', 'ChangeNickname',
  'UseApplicationCommands', 'RequestToSpeak', 'CreatePublicThreads', 'CreatePrivateThreads', 'UseExternalStickers',
  'SendMessagesInThreads', 'UseEmbeddedActivities', 'UseSoundboard', 'UseExternalSounds', 'SendVoiceMessages',
  'SendPolls', 'UseExternalApps',
].reduce((bits, name) => bits | Permission[name as keyof typeof Permission], 0n);

/** Every bit Discord defines today; what Administrator (and the guild owner) effectively have. */
export const ALL_PERMISSIONS = (1n << 52n) - 1n;

/** Names of the known bits in `bits`, for refusals such as "needs Administrator". */
export function permissionNames(bits: bigint): string[] {
  const names = Object.entries(Permission).filter(([, bit]) => (bits & bit) === bit).map(([name]) => name);
  const unnamed = bits & ~Object.values(Permission).reduce((all, bit) => all | bit, 0n);
  return unnamed === 0n ? names : [...names, `bits ${unnamed}`];
}
