"""From member probabilities ``(B, M, C)`` to a decision: the uncertainty decomposition, the
predicted agreement, the shift signals, the router and the batch's emotion mix."""
