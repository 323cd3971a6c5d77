"""Pure rules of voipcloud: statuses, lifecycle, roles, validation, errors. No I/O here."""
