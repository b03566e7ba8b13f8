"""Points exchange between programs and cross-brand redemption (积分生态化)."""
