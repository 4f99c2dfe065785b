"""`bump` and `promote`: move image references to a version where a human would.

Where an edit goes, per renderer (one editor module each, listed in `prbot.edit.editors.EDITORS`):

* kustomize (`kustomize.py`) — the target's own kustomization ``images:`` entry whose effective
  repository (``newName`` when set, else ``name``) is the image's; when the target has none, its
  own files that set the image at the version it renders (a ``version.yml`` patch); when those do
  not account for it (it comes from a base or component), an entry is appended the way ``kustomize
  edit set image`` would write it, named as the image appears in the rendered manifests.  Bases and
  components are never edited: whether the image is used is decided by *rendering* the target
  (the only way to see through bases, components, remote-free generators and other overlays'
  transformers), not by guessing from files.
* helm (`helm.py`) — the target's values files (only the last one setting a place: Helm's
  winner): ``repository`` + ``tag`` maps at any depth
  (``registry`` + ``repository`` split maps too, a ``digest`` field when the chart has one),
  ``image: repo:tag`` strings, and ``tag``-only overrides whose repository comes from the chart's
  defaults or an earlier values file.  When the image is set only where other targets read it too
  (the shared chart's values.yaml, a common values file), the override goes into the target's own
  values file, as a human would write it; the shared file is never edited.
* plain (`plain.py`) — ``image:`` of every ``containers`` / ``initContainers`` /
  ``ephemeralContainers`` list in the target's own files, every document, whatever the workload
  kind.

The other modules: `run.py` (the two commands), `base.py` (the command's context, what an editor
is), `transaction.py` (file texts edited in memory, written all together or not at all),
`values.py` (image places in Helm values), `objects.py` (image places in manifests: containers, a
Flux HelmRelease's values, an Argo CD Application's images and parameters), `rendered.py` (the
images rendered objects use or set).

No file that a target of another environment (or one the command does not move) also reads is ever
edited; a file only the moved targets of one environment read is edited once.  Edits are byte-preserving
(:mod:`prbot.yamledit`); every file of one command is written together, or none is.
"""

from __future__ import annotations

from prbot.edit.base import Editor
from prbot.edit.editors import EDITORS
from prbot.edit.rendered import CONTAINER_LISTS, container_images, declared_images, gitops_images, rendered_images
from prbot.edit.run import EditResult, bump, promote
from prbot.edit.transaction import FileEdit

__all__ = ["CONTAINER_LISTS", "EDITORS", "EditResult", "Editor", "FileEdit", "bump",
           "container_images", "declared_images", "gitops_images", "promote", "rendered_images"]
