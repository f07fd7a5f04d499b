from dataclasses import replace
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import PromotionError
from reconciler.promote import edits
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import CopyEdit, DeploymentPattern, GitOps, Replacement, SetEdit

DATA = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo")
SPEC = load_experiments(
    "apps/bookinfo/experiment.yaml", DATA.joinpath("experiment.yaml").read_bytes()
).experiments[0]
MAIN = {
    f"apps/bookinfo/{name}": DATA.joinpath(name).read_bytes()
    for name in (
        "productpage.yaml",
        "productpage-candidate.yaml",
        "routing.yaml",
        "experiment.yaml",
    )
}


def test_promotion_makes_the_candidate_stable_and_removes_the_experiment() -> None:
    changes = edits.apply(SPEC, edits.PROMOTED, "productpage-candidate", MAIN)
    assert set(changes) == {
        "apps/bookinfo/productpage.yaml",
        "apps/bookinfo/productpage-candidate.yaml",
        "apps/bookinfo/experiment.yaml",
    }
    assert changes["apps/bookinfo/productpage-candidate.yaml"] is None
    assert changes["apps/bookinfo/experiment.yaml"] is None
    stable = changes["apps/bookinfo/productpage.yaml"]
    assert stable is not None
    assert b"productpage-v2:1.18.0" in stable
    assert b"name: productpage-stable" in stable
    assert b"candidate" not in stable


def test_rollback_only_removes_the_candidate_and_the_experiment() -> None:
    changes = edits.apply(SPEC, edits.ROLLED_BACK, None, MAIN)
    assert changes == {
        "apps/bookinfo/productpage-candidate.yaml": None,
        "apps/bookinfo/experiment.yaml": None,
    }


def test_needed_paths_are_what_the_copies_read() -> None:
    assert edits.needed_paths(SPEC, edits.PROMOTED) == {"apps/bookinfo/productpage-candidate.yaml"}
    assert edits.needed_paths(SPEC, edits.ROLLED_BACK) == set()


def test_a_missing_copy_source_is_an_error_naming_it() -> None:
    main = {k: v for k, v in MAIN.items() if "candidate" not in k}
    with pytest.raises(PromotionError, match=r"productpage-candidate\.yaml' is not on main"):
        edits.apply(SPEC, edits.PROMOTED, "productpage-candidate", main)


def test_variables_of_the_winner_expand_in_replacements() -> None:
    copy = CopyEdit(
        "apps/bookinfo/productpage.yaml",
        "apps/bookinfo/productpage.yaml",
        (
            Replacement(
                "docker.io/istio/examples-bookinfo-productpage-v1:1.18.0", "{{ variables.image }}"
            ),
        ),
    )
    spec = replace(SPEC, gitops=GitOps(promote=(copy,)))
    changes = edits.apply(spec, edits.PROMOTED, "productpage-candidate", MAIN)
    result = changes["apps/bookinfo/productpage.yaml"]
    assert result is not None
    assert b"image: docker.io/istio/examples-bookinfo-productpage-v2:1.18.0" in result
    missing = replace(copy, replacements=(Replacement("x", "{{ variables.tag }}"),))
    with pytest.raises(PromotionError, match="defines no variable 'tag'"):
        edits.apply(
            replace(SPEC, gitops=GitOps(promote=(missing,))),
            edits.PROMOTED,
            "productpage-candidate",
            MAIN,
        )


@given(
    st.dictionaries(st.sampled_from(["apps/other/a.yaml", "README.md", "x/y.yaml"]), st.binary())
)
def test_the_same_edits_on_another_tip_give_the_same_result_for_untouched_files(
    unrelated: dict[str, bytes],
) -> None:
    moved = {**MAIN, **unrelated}
    assert edits.apply(SPEC, edits.PROMOTED, "productpage-candidate", moved) == edits.apply(
        SPEC, edits.PROMOTED, "productpage-candidate", MAIN
    )


def test_set_edit_writes_the_winners_variable_into_a_kustomization() -> None:
    kustomization = b"images:\n- name: shop  # app\n  newTag: v1 # current\n"
    edit = SetEdit("apps/bookinfo/kustomization.yaml", ".images[0].newTag", "{{ variables.tag }}")
    winner = replace(SPEC.candidates[0], variables=(("tag", "v2.1"),))
    spec = replace(SPEC, candidates=(winner,), gitops=GitOps(promote=(edit,)))
    files = {**MAIN, "apps/bookinfo/kustomization.yaml": kustomization}
    assert edits.needed_paths(spec, edits.PROMOTED) == {"apps/bookinfo/kustomization.yaml"}
    changes = edits.apply(spec, edits.PROMOTED, winner.name, files)
    assert changes["apps/bookinfo/kustomization.yaml"] == (
        b"images:\n- name: shop  # app\n  newTag: v2.1 # current\n"
    )
    with pytest.raises(PromotionError, match=r"kustomization\.yaml \.images\[3\]\.newTag: no item"):
        edits.apply(
            replace(spec, gitops=GitOps(promote=(replace(edit, path=".images[3].newTag"),))),
            edits.PROMOTED,
            winner.name,
            files,
        )


def test_a_blue_green_promotion_keeps_the_candidates_manifests_for_its_cleanup() -> None:
    blue_green = replace(SPEC, deployment_pattern=DeploymentPattern.BLUE_GREEN)
    changes = edits.apply(blue_green, edits.PROMOTED, "productpage-candidate", MAIN)
    # the winner serves from its manifests until the baseline runs its version
    assert "apps/bookinfo/productpage-candidate.yaml" not in changes
    assert changes["apps/bookinfo/experiment.yaml"] is None
    assert b"productpage-v2:1.18.0" in (changes["apps/bookinfo/productpage.yaml"] or b"")
    # then the cleanup deletes them, once, and only what is still there
    assert edits.cleanup_changes(blue_green, MAIN) == {
        "apps/bookinfo/productpage-candidate.yaml": None
    }
    gone = {**MAIN, "apps/bookinfo/productpage-candidate.yaml": None}
    assert edits.cleanup_changes(blue_green, gone) == {}
    # a rollback deletes them at once, as for the other patterns (nothing of it serves)
    rollback = edits.apply(blue_green, edits.ROLLED_BACK, None, MAIN)
    assert rollback["apps/bookinfo/productpage-candidate.yaml"] is None
    assert edits.cleanup_changes(SPEC, MAIN) == {}  # not blue/green: no cleanup commit
