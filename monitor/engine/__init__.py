"""The rule half of riskmon: expressions, rule evaluation and alert lifecycle."""
