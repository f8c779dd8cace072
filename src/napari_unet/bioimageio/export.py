"""Write a napari-unet model as a bioimage.io model package (format 0.5, bioimageio.spec).

The package holds:

- the weights twice: ``pytorch_state_dict`` (``weights.pt``, with
  `napari_unet.model.network` as ``network.py``, the architecture, and its
  keyword arguments) and ``torchscript`` (``weights.torchscript.pt``);
- the input ``raw`` (batch, channel, y, x) with the sides the network takes
  (``min + k * step``) and the output ``probabilities`` of the input's size
  with its halo, so that tools that tile crop it: a valid-padding network's
  logits are zero-padded back to the input size
  (`~napari_unet.model.network.PlainUNet`'s ``keep_size``) and that band,
  half the network's margin per side, is the halo; a same-padding network's
  halo is the context its tiles get in napari-unet (`SAME_CONTEXT`);
- the preprocessing that is the model's `Normalization`, exactly:
  ``scale_linear`` (to [0, 1] between its bounds), ``clip`` to [0, 1],
  ``scale_linear`` (standardise); the postprocessing: softmax over the two
  channels (``interior``, ``membrane``);
- test tensors cut from the bundled ISBI 2012 sample, a cover (input,
  probability, mask), the README (`napari_unet.bioimageio.card`, with its
  Validation section), the citations and the training settings;
- under ``config.napari_unet``: what the model file holds besides its weights,
  so that napari-unet reads the package back into the same model
  (`napari_unet.model.package`).

Nothing is written until the package is complete (and, by default, has passed
bioimageio.core's own test): it is built in a hidden folder beside the output
and renamed into place.
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet import __version__
from napari_unet.bioimageio import DEFAULT_DESCRIPTION, DEFAULT_LICENSE, DEFAULT_TAGS, card
from napari_unet.bioimageio.check import check_package
from napari_unet.errors import InputError
from napari_unet.io.sample import isbi2012
from napari_unet.io.stacks import check_not_inputs
from napari_unet.jobs import drain
from napari_unet.model import network
from napari_unet.model.files import FORMAT, VERSION, ModelFile, is_bundled, load_model, model_path
from napari_unet.model.package import CONFIG_KEY, require_bioimageio
from napari_unet.model.sizes import progression
from napari_unet.prediction.tiles import SAME_CONTEXT, mirror_crop

STEPS = ("reading the model", "test tensors", "cover image", "validation scores",
         "weights", "writing the package", "testing the package with bioimageio.core")
"""What an export does, in order; `ExportProgress` names the one starting."""

TEST_SIDE = 256
"""The test input's side is the smallest the network takes from this one up."""
INPUT, OUTPUT = "raw", "probabilities"
CHANNELS = ("interior", "membrane")
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")


@dataclass(frozen=True)
class ExportSettings:
    """What a package says about its model, beyond what the model file holds.

    Attributes
    ----------
    name : str or None
        5 to 128 letters, digits, spaces and ``_+-()``; None: ``napari-unet``
        and the model file's name.
    authors : tuple of str
        Names of the people who made the model.
    description : str or None
        One or two sentences (at most 1024 characters); None: `DEFAULT_DESCRIPTION`.
    license : str
        An SPDX identifier (``CC-BY-4.0``, ``MIT``, ``BSD-3-Clause``, ...).
    tags : tuple of str
        Added to `DEFAULT_TAGS`.
    documentation : Path or None
        A Markdown file; the package's README is its text followed by the
        generated model card.
    """

    name: str | None = None
    authors: tuple[str, ...] = ()
    description: str | None = None
    license: str = DEFAULT_LICENSE
    tags: tuple[str, ...] = ()
    documentation: Path | None = None


@dataclass(frozen=True)
class ExportProgress:
    """The step of an export that starts now (one of `STEPS`), as ``done`` of ``total``."""

    step: str
    done: int
    total: int


@dataclass(frozen=True)
class Sizes:
    """The input sides a package declares (``first + k * step``), its halo and test side."""

    first: int
    step: int
    halo: int
    test: int


def package_sizes(model_file: ModelFile) -> Sizes:
    """Return the sides, halo and test side a model's package declares.

    Valid padding: the network's own valid sides (188 + 16 k for the paper's)
    and half its margin as the halo. Same padding: multiples of
    ``2**(depth - 1)``, the halo `SAME_CONTEXT`, and the smallest side that
    keeps at least one step after cropping it.
    """
    m = model_file.config.model
    first, step, margin = progression(m.depth, m.padding)
    halo = margin // 2 if m.padding == "valid" else SAME_CONTEXT
    if m.padding == "same":
        first += max(0, math.ceil((2 * halo + step - first) / step)) * step
    test = first + max(0, math.ceil((TEST_SIDE - first) / step)) * step
    return Sizes(first, step, halo, test)


def default_name(model: str | os.PathLike) -> str:
    """Return ``napari-unet`` and the model's file name, reduced to the characters allowed."""
    stem = Path(str(model)).name.split(".")[0] or "model"
    stem = "".join(c if c in NAME_CHARACTERS else "-" for c in stem)
    return f"napari-unet {stem}"[:128]


def check_settings(settings: ExportSettings, name: str) -> None:
    """Refuse, in one line, metadata the package format would refuse (before any work)."""
    from bioimageio.spec.model.v0_5 import LicenseId

    if not 5 <= len(name) <= 128 or set(name) - NAME_CHARACTERS:
        raise InputError(f"name {name!r}: use 5 to 128 letters, digits, spaces and _+-() only")
    if settings.description is not None and len(settings.description) > 1024:
        raise InputError("description: at most 1024 characters")
    try:
        LicenseId(settings.license)
    except ValueError:
        raise InputError(f"license {settings.license!r} is not an SPDX license identifier "
                         "(e.g. CC-BY-4.0, MIT, BSD-3-Clause)") from None
    bad = [a for a in settings.authors if not a.strip() or "/" in a or "\\" in a]
    if bad:
        raise InputError(f"author {bad[0]!r}: a name, without slashes")
    doc = settings.documentation
    if doc is not None and not Path(doc).is_file():
        raise InputError(f"documentation {doc}: no such file")


def check_output(model: str | os.PathLike, output: Path, settings: ExportSettings, *,
                 overwrite: bool, flag: str = "-o") -> None:
    """Refuse an output that would replace an input, or an existing file without ``overwrite``."""
    inputs = {"the model": model_path(model)}
    if settings.documentation is not None:
        inputs["the documentation"] = Path(settings.documentation)
    check_not_inputs({flag: output}, inputs)
    if is_bundled(output):
        raise InputError(f"{flag} {output} is a model installed with napari-unet; choose "
                         "another name")
    if output.suffix.lower() != ".zip":
        raise InputError(f"{flag} {output}: a bioimage.io package is a .zip file")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such folder")
    if output.is_dir():
        raise InputError(f"{flag} {output} is a folder")
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; use --overwrite to replace it")


def export_job(
    model: str | os.PathLike,
    output: str | os.PathLike,
    settings: ExportSettings = ExportSettings(),
    *,
    overwrite: bool = False,
    check: bool = True,
) -> Generator[ExportProgress, None, Path]:
    """Write a model as a bioimage.io package, yielding each step as it starts.

    Parameters
    ----------
    model : str or PathLike
        A model file, a bundled model's name (``'isbi2012'``) or a package napari-unet wrote.
    output : str or PathLike
        The ``.zip`` file to write; never one of the inputs.
    settings : ExportSettings
    overwrite : bool
        Replace an existing ``output``.
    check : bool
        Run bioimageio.core's test (`napari_unet.bioimageio.check`) on the
        package before it is put in place: a package that fails is not written.

    Yields
    ------
    progress : ExportProgress

    Returns
    -------
    path : Path
        ``output``, complete.

    Raises
    ------
    InputError
        For a bad model, output or setting, before anything is written, or
        when bioimageio.core is missing.
    PackageCheckError
        When the package fails bioimageio.core's test (nothing is written).
    """
    total = len(STEPS) if check else len(STEPS) - 1
    steps = iter(enumerate(STEPS[:total]))

    def progress() -> ExportProgress:
        done, step = next(steps)
        return ExportProgress(step, done, total)

    require_bioimageio("writing a bioimage.io package")
    output = Path(output)
    name = settings.name or default_name(model)
    check_settings(settings, name)
    check_output(model, output, settings, overwrite=overwrite)
    yield progress()
    model_file = load_model(model)
    m = model_file.config.model
    if (m.in_channels, m.out_channels) != (1, len(CHANNELS)):
        raise InputError(f"{model}: a network of {m.in_channels} input channel(s) and "
                         f"{m.out_channels} classes; packages describe napari-unet's 1 grey "
                         "channel in, 2 classes (interior, membrane) out")
    with tempfile.TemporaryDirectory(prefix=".napari-unet-export.", dir=output.parent) as tmp:
        folder = Path(tmp)
        sizes = package_sizes(model_file)
        image, labels = isbi2012()
        z = card.validation_slices(model_file, len(image))[0]
        yield progress()
        _write_test_tensors(model_file, image[z], sizes, folder)
        yield progress()
        _write_cover(model_file, image[z], folder / "cover.png")
        yield progress()
        validation = card.stored_validation(model_file) or card.computed_validation(
            model_file, image, labels, card.validation_slices(model_file, len(image)))
        user_text = (None if settings.documentation is None
                     else Path(settings.documentation).read_text(encoding="utf-8"))
        (folder / "README.md").write_text(card.documentation(
            model_file, validation, name=name, halo=sizes.halo,
            sizes=(sizes.first, sizes.step), user_text=user_text), encoding="utf-8")
        yield progress()
        kwargs = _write_weights(model_file, folder)
        yield progress()
        built = _save(_description(model_file, settings, name, sizes, kwargs, folder),
                      folder / "package.zip")
        if check:
            yield progress()
            check_package(built)
        os.replace(built, output)
    return output


def export_package(model: str | os.PathLike, output: str | os.PathLike,
                   settings: ExportSettings = ExportSettings(), **options) -> Path:
    """Run `export_job` to the end and return the package's path (for scripts)."""
    return drain(export_job(model, output, settings, **options))


def _network_input(model_file: ModelFile, tile: np.ndarray) -> np.ndarray:
    norm = model_file.normalization
    return norm.network(norm.unit(tile))


def _plain_network(model_file: ModelFile) -> network.PlainUNet:
    """Return the network as the package rebuilds it (`PlainUNet`, keeping the input size)."""
    config = dataclasses.asdict(model_file.config.model)
    plain = network.PlainUNet(**config, keep_size=config["padding"] == "valid")
    plain.load_state_dict(model_file.state_dict)
    return plain.eval()


def _write_test_tensors(model_file: ModelFile, image_slice: np.ndarray, sizes: Sizes,
                        folder: Path) -> None:
    """Cut the test input from the centre of a sample slice and predict its test output."""
    top = (image_slice.shape[0] - sizes.test) // 2
    left = (image_slice.shape[1] - sizes.test) // 2
    tile = mirror_crop(image_slice, top, left, sizes.test, sizes.test).astype(np.float32)
    with torch.no_grad():
        logits = _plain_network(model_file)(
            torch.from_numpy(_network_input(model_file, tile)[None, None]))
        probabilities = torch.softmax(logits, dim=1).numpy().astype(np.float32)
    np.save(folder / "test_input.npy", tile[None, None])
    np.save(folder / "test_output.npy", probabilities)
    # the sample tensors: the same as images a person opens (P(membrane) only)
    tifffile.imwrite(folder / "sample_input.tif", tile)
    tifffile.imwrite(folder / "sample_output.tif", probabilities[0, 1])


def _write_cover(model_file: ModelFile, image_slice: np.ndarray, path: Path) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, card.cover_of(model_file, image_slice))


def _write_weights(model_file: ModelFile, folder: Path) -> dict:
    """Write the state dict, the architecture file and the TorchScript; return its kwargs."""
    state_dict = {k: v.detach().cpu() for k, v in model_file.state_dict.items()}
    torch.save(state_dict, folder / "weights.pt")
    shutil.copyfile(network.__file__, folder / "network.py")
    plain = _plain_network(model_file)
    with warnings.catch_warnings():  # torch.jit.script is deprecated; the format remains
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(plain), str(folder / "weights.torchscript.pt"))
    return {**dataclasses.asdict(model_file.config.model), "keep_size": plain.keep_size}


def _yaml_safe(value):
    """Plain JSON types (what YAML and the description accept) of a history or config."""
    return json.loads(json.dumps(value, default=float))


def _description(model_file: ModelFile, settings: ExportSettings, name: str, sizes: Sizes,
                 kwargs: dict, folder: Path):
    """Build the model description (bioimageio.spec 0.5) of the files in ``folder``."""
    from bioimageio.spec.model import v0_5 as spec

    space = spec.ParameterizedSize(min=sizes.first, step=sizes.step)
    norm = model_file.normalization
    span = norm.high - norm.low
    # No ``pad``: bioimageio.spec 0.5.12 reads any written padding back as constant zeros;
    # without one, tools mirror the input (symmetric), close to the paper's mirroring.
    inputs = spec.InputTensorDescr(
        id=spec.TensorId(INPUT),
        description="one grey 2D EM slice, raw intensities",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(INPUT)]),
              spec.SpaceInputAxis(id=spec.AxisId("y"), size=space),
              spec.SpaceInputAxis(id=spec.AxisId("x"), size=space)],
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=spec.FileDescr(source=folder / "sample_input.tif"),
        preprocessing=[
            spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
            spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=1.0 / span,
                                                                offset=-norm.low / span)),
            spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)),
            spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=1.0 / norm.std,
                                                                offset=-norm.mean / norm.std)),
            spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
        ],
    )

    def output_axis(axis: str):
        return spec.SpaceOutputAxisWithHalo(
            id=spec.AxisId(axis), halo=sizes.halo,
            size=spec.SizeReference(tensor_id=spec.TensorId(INPUT), axis_id=spec.AxisId(axis)))

    outputs = spec.OutputTensorDescr(
        id=spec.TensorId(OUTPUT),
        description="softmax of the two classes; channel 1 is P(membrane)",
        axes=[spec.BatchAxis(),
              spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in CHANNELS]),
              output_axis("y"), output_axis("x")],
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=spec.FileDescr(source=folder / "sample_output.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel")))],
    )
    torch_version = spec.Version(torch.__version__.split("+")[0])
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
            architecture=spec.ArchitectureFromFileDescr(
                source=folder / "network.py", callable=spec.Identifier("PlainUNet"),
                kwargs=kwargs),
            pytorch_version=torch_version),
        torchscript=spec.TorchscriptWeightsDescr(
            source=folder / "weights.torchscript.pt", parent="pytorch_state_dict",
            pytorch_version=torch_version,
            comment="torch.jit.script of the pytorch_state_dict architecture"),
    )
    t = model_file.config.train
    training = spec.TrainingDetails(
        training_preprocessing="normalisation of the training image (0.1 and 99.9 "
        "percentiles to [0, 1], then standardised), random tiles with augmentation",
        training_epochs=max([r.get("epoch", 0) or 0 for r in model_file.history], default=None),
        training_batch_size=t.batch_size, initial_learning_rate=t.lr,
        learning_rate_schedule=t.schedule,
        loss_function="cross-entropy weighted by the map of eq. 2 (Ronneberger et al. 2015)",
        loss_function_kwargs=_yaml_safe(dataclasses.asdict(model_file.config.weights)),
        optimizer="torch.optim.SGD" if t.optimizer == "sgd" else "torch.optim.Adam",
        optimizer_kwargs={"momentum": t.momentum, "weight_decay": t.weight_decay}
        if t.optimizer == "sgd" else {"weight_decay": t.weight_decay},
    )
    own = {"format": FORMAT, "version": VERSION, "napari_unet_version": __version__,
           "config": model_file.config.to_dict(),
           "normalization": dataclasses.asdict(model_file.normalization),
           "threshold": model_file.threshold, "close_gaps": model_file.close_gaps,
           "history": _yaml_safe(model_file.history)}
    config = spec.Config(
        bioimageio=spec.BioimageioConfig(
            architecture_type="U-Net", modality="electron microscopy",
            target_structure=["cell membranes"], task="semantic segmentation",
            model_parameter_count=sum(p.numel() for p in model_file.build_model().parameters()),
            training=training),
        **{CONFIG_KEY: own})
    return spec.ModelDescr(
        name=name,
        description=settings.description or DEFAULT_DESCRIPTION,
        authors=[spec.Author(name=a.strip()) for a in settings.authors],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in card.CITATIONS],
        license=spec.LicenseId(settings.license),
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *settings.tags])),
        documentation=spec.FileDescr(source=folder / "README.md"),
        covers=[spec.FileDescr(source=folder / "cover.png")],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        config=config,
    )


def _save(description, path: Path) -> Path:
    """Zip a description and its files; a description the format refuses raises, in one line."""
    from bioimageio.spec import save_bioimageio_package

    try:
        return Path(save_bioimageio_package(description, output_path=path))
    except ValueError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()),
                     str(err))
        raise RuntimeError(f"bioimageio.spec refused the package: {first}") from None
