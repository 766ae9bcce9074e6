"""Data-access and notification providers (see docs/providers.md).

Interfaces in :mod:`cdsops.providers.base`; Google implementations in
:mod:`cdsops.providers.google`; the embedded default in :mod:`cdsops.providers.local`;
email and the notification ledger in :mod:`cdsops.providers.email`.
"""

from cdsops.providers.base import (
    AccessChange,
    AccessProvider,
    AccessReport,
    EmailMessage,
    EmailProvider,
    GroupProvider,
    LimitExceeded,
    NotificationKey,
    NotificationLedger,
    ProviderError,
    QuotaExceeded,
    SyncReport,
    VerificationFailed,
)

__all__ = [
    "AccessChange",
    "AccessProvider",
    "AccessReport",
    "EmailMessage",
    "EmailProvider",
    "GroupProvider",
    "LimitExceeded",
    "NotificationKey",
    "NotificationLedger",
    "ProviderError",
    "QuotaExceeded",
    "SyncReport",
    "VerificationFailed",
]
