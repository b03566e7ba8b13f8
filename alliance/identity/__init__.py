"""Identity federation: verified identifiers, consent, merge and unlink, privacy rights."""
