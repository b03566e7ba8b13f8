"""Rewards: the catalog, redemptions (reserve → fulfil → complete, or cancel / expire),
coupon codes, point gifting between members, and expiry reminders."""
