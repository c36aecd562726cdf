"""Data path: read files with locations -> validate -> tokenize (chat template, response mask) -> collate."""
