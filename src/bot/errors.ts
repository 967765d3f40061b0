// Errors whose message is written for the member who ran a command: the interaction handler shows them as they are.

export class UserFacingError extends Error {
  override name = 'UserFacingError';
}

export class PermissionDeniedError extends UserFacingError {
  override name = 'PermissionDeniedError';
}
