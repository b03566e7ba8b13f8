"""Manual adjustments of member accounts by merchant staff, with maker-checker approval."""
