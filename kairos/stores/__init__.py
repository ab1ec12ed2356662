"""Storage adapters behind narrow interfaces, chosen by configuration (DESIGN §2 profiles)."""
