"""Bottom layer shared by every package: config base types, storage locations, hashing, caching, test hooks.

Imports no other project package (see ARCHITECTURE.md, "Import rule")."""
