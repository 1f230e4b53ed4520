"""MTHDS `.mthds` bundles and packages: a third spelling of durapipe's one pipe model.

Stable entry points (the protocol half, `durapipe serve`, calls these):

```python
load_mthds(path_or_text, *, source=None, deck=None) -> Pipeline
    # A `.mthds` file, a package folder (with METHODS.toml), or bundle TOML text. Returns the same
    # `durapipe.spec.Pipeline` the YAML loader returns; pipe names are the MTHDS pipe codes
    # (see `pipe_for`). Raises MthdsError (a PipelineError) listing every problem at once, each
    # naming bundle, pipe and field, with the TOML line.
validate_mthds(path_or_text, *, source=None) -> list[Problem]   # [] when valid; never raises
main_pipe(path_or_text) -> str | None # the bundle's (or package's) main_pipe (load_method(...).main_pipe)
mthds_inputs(data) -> dict            # MTHDS input format -> durapipe run inputs
mthds_output(pipeline, pipe, output, inputs, *, with_memory=False) -> Any   # CLI I/O contract
override_output(method, pipe, concept, *, multiplicity=None, dynamic_concept=None)
    # the protocol's output_multiplicity / dynamic_output_concept_ref on one run
```
"""

from durapipe.adapters.mthds._api import (
    Method,
    MthdsError,
    is_mthds_path,
    load_method,
    load_mthds,
    main_pipe,
    pipe_for,
    validate_mthds,
)
from durapipe.adapters.mthds._deck import ModelDeck, ResolvedModel, load_deck, resolve_model
from durapipe.adapters.mthds._io import memory_pipeline, mthds_inputs, mthds_output
from durapipe.adapters.mthds._memory import memory_values
from durapipe.adapters.mthds._outputs import OutputOverride, override_output

__all__ = [
    "Method",
    "ModelDeck",
    "MthdsError",
    "OutputOverride",
    "ResolvedModel",
    "is_mthds_path",
    "load_deck",
    "load_method",
    "load_mthds",
    "main_pipe",
    "memory_pipeline",
    "memory_values",
    "mthds_inputs",
    "mthds_output",
    "override_output",
    "pipe_for",
    "resolve_model",
    "validate_mthds",
]
