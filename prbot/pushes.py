"""What a registry push means for a GitOps repository: which `images[]` rule takes it, and where."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prbot.config import Config, ImageRule
from prbot.images import ImageRef, is_newer, same_repository


@dataclass(frozen=True)
class PushDecision:
    rule: ImageRule | None
    env: str | None            # environment the image lands in; None when ignored
    image: ImageRef
    reason: str                # why it was accepted or ignored, for logs and webhook responses

    @property
    def accepted(self) -> bool:
        return self.env is not None


def decide(config: Config, image: ImageRef, current_tag: str | None = None) -> PushDecision:
    """Match a pushed image against `images[]`: tag filter, semver policy, digest pinning."""
    rule = next((r for r in config.images if same_repository(r.repository, image.name)), None)
    if rule is None:
        return PushDecision(None, None, image, f"{image.repository} is not listed under images")
    if not image.tag:
        return PushDecision(rule, None, image, "the push carries no tag")
    if rule.tags and not re.fullmatch(rule.tags, image.tag):
        return PushDecision(rule, None, image, f"tag {image.tag} does not match {rule.tags}")
    if rule.policy == "semver":
        newer = is_newer(image.tag, current_tag) if current_tag else True
        if newer is None and current_tag:
            newer = is_newer(image.tag, "0.0.0")
        if not newer:
            return PushDecision(rule, None, image,
                                f"tag {image.tag} is not a higher version than {current_tag} (policy: semver)")
    if not rule.digest and image.digest:
        image = image.with_version(image.tag, None)
    env = rule.land_in or config.environments[0].name
    return PushDecision(rule, env, image, f"{image} lands in {env}")
