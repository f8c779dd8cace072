import numpy as np
import pytest

from napari_unet.errors import InputError
from napari_unet.io.labels import (
    INTERIOR,
    MEMBRANE,
    annotated_slices,
    annotation_to_isbi,
    describe_pair,
    export_mask,
    isbi_to_annotation,
    label_convention,
    mask_to_annotation,
    to_annotation,
)

ISBI = np.array([[0, 255, 255], [0, 0, 255]], dtype=np.uint8)
ANNOTATION = np.array([[1, 2, 2], [1, 1, 2]], dtype=np.uint8)


def test_isbi_to_annotation():
    np.testing.assert_array_equal(isbi_to_annotation(ISBI), ANNOTATION)


def test_annotation_to_isbi():
    np.testing.assert_array_equal(annotation_to_isbi(ANNOTATION), ISBI)


def test_round_trip_both_ways():
    np.testing.assert_array_equal(to_annotation(annotation_to_isbi(ANNOTATION)), ANNOTATION)
    np.testing.assert_array_equal(annotation_to_isbi(to_annotation(ISBI)), ISBI)


def test_unannotated_pixels_are_not_membrane_in_isbi():
    partial = np.array([[0, 1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(annotation_to_isbi(partial), [[255, 0, 255]])


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (ANNOTATION, "annotation"),
        (ISBI, "isbi"),
        (np.zeros((4, 4), np.uint8), "annotation"),
        (np.full((4, 4), 255, np.uint16), "isbi"),
        (np.array([[0, 1]], np.int64), "annotation"),
        (np.array([[0.0, 255.0]], np.float32), "isbi"),
    ],
)
def test_label_convention(labels, expected):
    assert label_convention(labels) == expected


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[0, 1, 3]], np.uint8), r"\[3\] fit no convention"),
        (np.array([[0, 128, 255]], np.uint8), r"\[128\] fit no convention"),
        (np.array([[1, 255]], np.uint8), "fit no convention"),
        (np.array([[0.5, 1.0]]), "fit no convention"),
        (np.array([[True, False]]), "dtype bool"),
        (np.array([[np.nan, 1.0]]), "NaN"),
    ],
)
def test_foreign_values_are_refused(labels, message):
    with pytest.raises(InputError, match=message):
        to_annotation(labels)


def test_to_annotation_copies():
    labels = ANNOTATION.copy()
    out = to_annotation(labels)
    out[0, 0] = 2
    assert labels[0, 0] == MEMBRANE


def test_export_mask_conventions():
    np.testing.assert_array_equal(export_mask(ANNOTATION), [[255, 0, 0], [255, 255, 0]])
    np.testing.assert_array_equal(export_mask(ANNOTATION, convention="isbi"), ISBI)
    for convention in ("membrane", "isbi"):
        back = mask_to_annotation(export_mask(ANNOTATION, convention=convention),
                                  convention=convention)
        np.testing.assert_array_equal(back, ANNOTATION)
    with pytest.raises(InputError, match="unknown mask convention"):
        export_mask(ANNOTATION, convention="other")


def test_annotated_slices():
    stack = np.zeros((4, 3, 3), np.uint8)
    stack[1, 0, 0] = MEMBRANE
    stack[3, 2, 2] = INTERIOR
    assert annotated_slices(stack) == [1, 3]
    assert annotated_slices(stack[1]) == [0]
    assert annotated_slices(stack[0]) == []


def test_describe_pair():
    image = np.zeros((2, 3, 3), np.uint8)
    labels = np.zeros_like(image)
    labels[1, 0, 0] = INTERIOR
    summary = describe_pair(image, labels)
    assert summary == "image 2 x 3 x 3 uint8; labels (annotation convention): 1/2 slices annotated"
    # ISBI files have no "not annotated" value: every slice counts.
    isbi = describe_pair(image, np.full_like(image, 255))
    assert isbi.endswith("(isbi convention): 2/2 slices annotated")
    assert describe_pair(image, None).endswith("no labels")
    assert describe_pair(image, labels[0]).startswith("problem: labels shape (3, 3) differs")


@pytest.mark.parametrize("values, dtype", [
    ((0, 1, 2), np.uint8), ((1, 2), np.int64), ((0,), np.uint8), ((0, 255), np.uint8),
    ((255,), np.int32), ((0, 255), np.uint16), ((0, 1, 2), np.float32), ((0, 255), np.float64),
    ((0, 7), np.uint8), ((0, 255, 3), np.uint8), ((-1, 1), np.int16), ((0, 1, 255), np.int64),
    ((0, 1.5), np.float32),
])
def test_convention_by_range_agrees_with_the_census_of_values(values, dtype):
    # the range shortcut decides only where the distinct values would decide the same
    labels = np.resize(np.array(values, dtype), (3, 5, 7))
    present = set(np.unique(labels).tolist())
    if present <= {0, 1, 2}:
        expected = "annotation"
    elif present <= {0, 255}:
        expected = "isbi"
    else:
        with pytest.raises(InputError, match="fit no convention"):
            label_convention(labels)
        return
    assert label_convention(labels) == expected
    assert label_convention(labels[0]) == expected
