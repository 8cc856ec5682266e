"""In-memory implementations of the engine interfaces, for unit tests of the rules."""
