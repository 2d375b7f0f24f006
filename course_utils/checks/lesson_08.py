"""Self-checks of lesson 08: QLoRA training."""

from __future__ import annotations
