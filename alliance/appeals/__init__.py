"""Appeals (积分申诉): a member disputes a transaction; merchant staff answer and resolve."""
