"""Where things live: storage URLs, database engine options, artifacts."""
