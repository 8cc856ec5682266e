"""The composition root: builds the process once and hands each part only what it needs."""
