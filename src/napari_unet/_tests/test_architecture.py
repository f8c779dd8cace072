"""The import rules of docs/architecture.md, checked on the source: each part imports only the
parts below it (lazy imports inside functions count too)."""

import ast
from pathlib import Path

import pytest

import napari_unet

PACKAGE = Path(napari_unet.__file__).parent
FOUNDATIONS = {"errors", "checks", "devices", "jobs"}
NAPARI = {"_widgets", "_reader", "_writer", "_sample_data"}

MAY_IMPORT = {
    "foundations": {"foundations"},
    "config": {"foundations", "config"},
    "io": {"foundations", "io"},
    "evaluation": {"foundations", "io", "evaluation"},
    "model": {"foundations", "config", "io", "model"},
    "prediction": {"foundations", "io", "model", "prediction"},
    "training": {"foundations", "config", "io", "model", "prediction", "evaluation", "training"},
    "bioimageio": {"foundations", "config", "io", "model", "prediction", "evaluation",
                   "bioimageio"},
    "cli": {"foundations", "config", "io", "model", "prediction", "evaluation", "training",
            "bioimageio", "cli"},
    "napari": {"foundations", "config", "io", "model", "prediction", "evaluation", "training",
               "bioimageio", "napari"},
    "package": {"model", "training"},  # napari_unet/__init__.py's lazy public names
}
# config nests the configs of two training modules; the CLI's `demo` command opens napari.
EXCEPTIONS = {
    ("config", "napari_unet.training.augment_config"),
    ("config", "napari_unet.training.weights"),
    ("cli", "napari_unet._widgets.demo"),
}


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in FOUNDATIONS:
        return "foundations"
    if head in NAPARI:
        return "napari"
    return "cli" if head == "__main__" else head  # python -m napari_unet runs the CLI


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            names.add(source)
            names |= {f"{source}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("napari_unet.") and " " not in node.value:
                names.add(node.value)  # lazy maps and import_module strings
    return {n for n in names if n == "napari_unet" or n.startswith("napari_unet.")}


def sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if "_tests" not in p.parts)


def real_modules(names: set[str]) -> set[str]:
    """Keep names that are modules or packages of napari_unet (drop imported attributes)."""
    found = set()
    for name in names:
        relative = Path(*name.split(".")[1:]) if "." in name else Path()
        if (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative).is_dir():
            found.add(name)
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_part_imports_only_what_it_may(path):
    module = module_name(path)
    part = part_of(module)
    allowed = MAY_IMPORT[part]
    bad = sorted(
        name for name in real_modules(imported(path, module))
        if name != "napari_unet" and part_of(name) not in allowed
        and (part, name) not in EXCEPTIONS
    )
    assert not bad, f"{module} ({part}) imports {bad}"


def test_every_part_has_a_rule():
    parts = {part_of(module_name(p)) for p in sources()}
    assert parts <= set(MAY_IMPORT), parts - set(MAY_IMPORT)


def test_the_rule_catches_a_forbidden_import(tmp_path):
    # the checker itself: prediction importing the training loop is reported
    fake = PACKAGE / "prediction" / "predict.py"
    names = real_modules(imported(fake, "napari_unet.prediction.predict"))
    assert all(part_of(n) != "training" for n in names)
    probe = tmp_path / "probe.py"
    probe.write_text("from napari_unet.training.train import train\n")
    found = real_modules(imported(probe, "napari_unet.prediction.probe"))
    assert "napari_unet.training.train" in found
    assert part_of("napari_unet.training.train") not in MAY_IMPORT["prediction"]
