import { Routes, type REST, type RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';

// Registering the slash commands: for one guild while developing (they appear at once), or globally.

export async function deployCommands(
  rest: REST,
  applicationId: string,
  guildId: string | null,
  definitions: RESTPostAPIChatInputApplicationCommandsJSONBody[],
): Promise<number> {
  const route = guildId === null ? Routes.applicationCommands(applicationId) : Routes.applicationGuildCommands(applicationId, guildId);
  // A bulk overwrite: commands this bot no longer has disappear from Discord too.
  const registered = await rest.put(route, { body: definitions }) as unknown[];
  return registered.length;
}
