"""Check a Ray cluster-launcher YAML the way ``ray up`` will, before running it.

``ray up`` fills a config's provider defaults (``prepare_config``) and then validates it against
``ray/autoscaler/ray-schema.json`` of the installed Ray (``validate_config``); a mistake found
there costs a failed launch. Both steps are Ray's own functions, so the check cannot drift from
the Ray version installed. The raw file is also checked against the schema, as editors and CI
linters see it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ray_broker.errors import InvalidConfig


def ray_schema() -> dict[str, Any]:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def validate_cluster_config(path: Path) -> dict[str, Any]:
    """The config as ``ray up`` will use it.

    Raises:
        InvalidConfig: the file cannot be read or parsed, or Ray's schema rejects it (the
            message names the offending field).
    """
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidConfig(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{path}: a cluster config is a YAML mapping")
    try:
        jsonschema.validate(raw, ray_schema())
        prepared = prepare_config(raw)
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "top level"
        raise InvalidConfig(f"{path}: at {where}: {exc.message}") from None
    except (ValueError, KeyError, SystemExit) as exc:  # Ray's own checks (SystemExit: cli abort)
        raise InvalidConfig(f"{path}: {exc}") from None
    return prepared
