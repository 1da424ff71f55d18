"""The verifier side of the check models: a verifier that runs a workbench-trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from workbench.verifiers.base import VerifierError


class TrainedModelVerifier:
    """Mixin (listed before the verifier base) for a verifier that runs a workbench-trained model.
    `model`: run directory or model file; None = newest finished run under `root` (default:
    $WORKBENCH_RUNS or ./runs). Subclasses set `name` and `resolve_model_path(model, root)`."""

    name: str
    resolve_model_path: Callable[[str | Path | None, str | Path | None], Path]

    def __init__(self, model: str | Path | None = None, root: str | Path | None = None, batch_size: int = 16) -> None:
        super().__init__()
        if batch_size < 1:
            raise VerifierError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.root = root
        self.batch_size = batch_size
        self._path: Path | None = None

    @property
    def model_path(self) -> Path:
        """The model file in use (resolved once, so later runs do not change a live verifier)."""
        if self._path is None:
            self._path = self.resolve_model_path(self.model, self.root)
        return self._path
