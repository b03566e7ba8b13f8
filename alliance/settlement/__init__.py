"""Settlement between merchants: obligations, periods, statements, finance reports."""
