"""Which image versions the configuration accepts: the `images[]` rules.

One place decides for every way an image moves: a registry push (`decide`), `prbot bump` and the
service's bump flow (`tag_refusal`, `version_refusal` with the rule's policy) and `prbot promote`
(`version_refusal`): neither command moves to a lower version, versions read as Flux reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prbot.config import Config, ImageRule
from prbot.images import ImageRef, parse_semver, same_repository


@dataclass(frozen=True)
class PushDecision:
    rule: ImageRule | None
    env: str | None            # environment the image lands in; None when ignored
    image: ImageRef
    reason: str                # why it was accepted or ignored, for logs and webhook responses

    @property
    def accepted(self) -> bool:
        return self.env is not None


def rule_for(config: Config, repository: str) -> ImageRule | None:
    """The `images[]` rule of an image repository (docker.io spellings are one repository)."""
    return next((r for r in config.images if same_repository(r.repository, repository)), None)


def tag_refusal(rule: ImageRule | None, tag: str | None) -> str | None:
    """Why the rule's `tags` pattern refuses `tag`, or None (no rule, no pattern, no tag: accepted)."""
    if rule is None or not rule.tags or tag is None or re.fullmatch(rule.tags, tag):
        return None
    return f"tag {tag} does not match {rule.tags} (images[].tags of {rule.repository})"


def version_refusal(current: str | None, new: str | None, *, semver_policy: bool) -> str | None:
    """Why moving from tag `current` to tag `new` is refused, or None.

    A lower version is always refused (`promote`, `bump`; registry pushes under ``policy:
    semver``).  Versions are read as Flux reads them (`parse_semver`: ``1.25``, ``v2``,
    ``v2.0.1``, pre-releases), so ``3.0`` → ``2.0.0`` is a downgrade and ``2.0`` → ``2.0.0`` is none.
    Under ``policy: semver`` the new tag must also be a version (``latest``, a commit sha or a
    digest alone are not).  Tags that are not versions have no order: moving between them is never
    a downgrade.
    """
    new_key = parse_semver(new) if new else None
    current_key = parse_semver(current) if current else None
    policy = " (policy: semver)" if semver_policy else ""
    if semver_policy and new_key is None:
        return f"{new or 'a reference without a tag'} is not a semantic version{policy}"
    if new_key is not None and current_key is not None and new_key < current_key:
        return f"{new} is a lower version than {current}{policy}"
    return None


def decide(config: Config, image: ImageRef, current_tag: str | None = None) -> PushDecision:
    """Match a pushed image against `images[]`: tag filter, semver policy, digest pinning.

    Under ``policy: semver`` a push must be a *higher* version than `current_tag` (the same version
    again opens no PR), whatever order the webhooks arrive in.
    """
    rule = rule_for(config, image.name)
    if rule is None:
        return PushDecision(None, None, image, f"{image.repository} is not listed under images")
    if not image.tag:
        return PushDecision(rule, None, image, "the push carries no tag")
    refused = tag_refusal(rule, image.tag)
    if refused:
        return PushDecision(rule, None, image, refused)
    if rule.policy == "semver":
        refused = version_refusal(current_tag, image.tag, semver_policy=True)
        same = bool(current_tag) and parse_semver(current_tag or "") == parse_semver(image.tag)
        if refused or same:
            if current_tag and parse_semver(image.tag) is not None:
                refused = f"tag {image.tag} is not a higher version than {current_tag} (policy: semver)"
            return PushDecision(rule, None, image, refused or "")
    if not rule.digest and image.digest:
        image = image.with_version(image.tag, None)
    env = rule.land_in or config.environments[0].name
    return PushDecision(rule, env, image, f"{image} lands in {env}")
