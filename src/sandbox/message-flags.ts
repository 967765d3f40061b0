// Discord's message flag bits the sandbox reads or sets (values from Discord's message flags table).

export const MessageFlag = {
  SuppressEmbeds: 1 << 2,
  /** Only the member who used the interaction sees the message. */
  Ephemeral: 1 << 6,
  /** A deferred interaction reply that still shows "thinking…". */
  Loading: 1 << 7,
  SuppressNotifications: 1 << 12,
  /** Components are laid out with the v2 components, so the action-row limit does not apply. */
  IsComponentsV2: 1 << 15,
} as const;
