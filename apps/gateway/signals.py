"""What revokes access tokens (apps/gateway/revocation.py): the end of a session, and a change of a user's
standing. Connected in GatewayConfig.ready().

Deactivate users through the model (`user.is_active = False; user.save()`, the admin, allauth): a bulk
`QuerySet.update()` sends no signal and would leave the user's tokens alive until they expire."""

from __future__ import annotations

from typing import Any

from allauth.usersessions.models import UserSession
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save

from apps.gateway import revocation

# The fields whose change ends every token issued before it.
_STANDING = ("is_active", "is_staff", "password")


def _session_ended(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.session_key:
        revocation.revoke_session(instance.session_key)


def _remember_standing(sender: Any, instance: Any, **kwargs: Any) -> None:
    # From __dict__: a deferred field is not loaded just to remember it.
    instance._auth_standing = tuple(instance.__dict__.get(name) for name in _STANDING)


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created:
        _remember_standing(sender, instance)
        return
    before = getattr(instance, "_auth_standing", None)
    now = tuple(instance.__dict__.get(name) for name in _STANDING)
    changed = before is None or any(b is not None and b != n for b, n in zip(before, now, strict=True))
    if update_fields is not None and not set(update_fields) & set(_STANDING):
        changed = False
    if changed or not instance.__dict__.get("is_active", True):
        revocation.revoke_user(instance.pk)
    instance._auth_standing = now


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    revocation.revoke_user(instance.pk)


def _groups_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if not reverse:
        revocation.revoke_user(instance.pk)
    elif pk_set:
        for user_id in pk_set:
            revocation.revoke_user(user_id)
    # A group cleared from its side (reverse, post_clear) names no users: staff groups are not cleared so.


def connect() -> None:
    user_model = get_user_model()
    post_delete.connect(_session_ended, sender=Session, dispatch_uid="gateway.revoke.session")
    post_delete.connect(_session_ended, sender=UserSession, dispatch_uid="gateway.revoke.usersession")
    post_init.connect(_remember_standing, sender=user_model, dispatch_uid="gateway.revoke.remember")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="gateway.revoke.user_saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="gateway.revoke.user_deleted")
    m2m_changed.connect(_groups_changed, sender=user_model.groups.through, dispatch_uid="gateway.revoke.groups")
