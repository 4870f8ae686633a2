"""State shared between gateway nodes (kiosk registrations, live calls)."""

from gateway.store.base import FieldValue, Record, Store, Value
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore

__all__ = ["FieldValue", "MemoryStore", "Record", "RedisStore", "Store", "Value"]
