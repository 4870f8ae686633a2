"""State shared between gateway nodes (kiosk registrations, live calls)."""

from gateway.store.base import FieldValue, Record, Store, Value
from gateway.store.memory import MemoryStore

__all__ = ["FieldValue", "MemoryStore", "Record", "Store", "Value"]
