"""The caption a face gets when it has none: the datasets' and the rewards' fallback (``T`` of the FRM's score)."""

DEFAULT_FALLBACK_CAPTION = 'a high-quality photo of a face'
