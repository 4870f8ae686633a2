"""``[billing]`` configuration: the documented example, defaults, and mistakes with lines."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.app import make_service
from gateway.billing.meter import FakeMeter, SignallingMeter
from gateway.billing.session import CreditPolicy
from gateway.config import ConfigError, default_config, load_config, loads_config

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "gateway.toml"

FACILITY = """
[[billing.facilities]]
id = "county"
type = "jail"
adp = 420

[[billing.facilities.rate]]
service = "video"
effective_from = 2026-04-06
per_minute = "0.19"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads_config(text, source="FILE")
    return str(info.value).splitlines()


def test_billing_is_off_by_default_and_adds_no_service() -> None:
    config = default_config()
    assert not config.billing.enabled
    assert [s.name for s in make_service(config)] == ["lifecycle", "sip", "ready"]


def test_the_documented_example_loads_when_uncommented(tmp_path: Path) -> None:
    """The commented [[billing.facilities]] and [[billing.plans]] in conf/gateway.toml work."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("[billing]")
    out = lines[:start + 1]
    for line in lines[start + 1:]:
        body = line[2:]
        if line.startswith("# ") and (body.startswith("[[billing")
                                      or re.match(r"^[a-z_]+ = ", body)):
            line = body
        elif line == "#":
            line = ""
        out.append(line)
    out[out.index("enabled = false", start)] = "enabled = true"
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(out) + "\n")
    config = load_config(path)
    billing = config.billing
    assert billing.enabled and billing.increment == "per_minute_round_up"
    [facility] = billing.facilities
    assert facility.id == "county-jail" and len(facility.rates) == 2 and facility.taxes
    assert [p.name for p in billing.plans] == ["family-of-kiosk-a1", "state-pays-35-percent"]
    plan = billing.plan_for("kiosk-a1", "91234")
    assert plan is not None and plan.name == "family-of-kiosk-a1"
    assert plan.free_minutes_per_day == 10
    shared = billing.plan_for("kiosk-b7", "5551234")
    assert shared is not None
    assert [(p.account, p.share) for p in shared.payers] == [
        ("family-john-roe", Decimal(65)), ("state-doc", Decimal(35))]
    assert shared.free_minutes_per_day == 0  # the default: no free minutes
    assert billing.plan_for("kiosk-b7", "4") is None
    policy = billing.policy()
    assert (policy.increment_seconds, policy.first_block_seconds, policy.warning_seconds) == (
        60, 300, 120)
    assert policy.credit == CreditPolicy(True, 60)


def test_a_full_billing_table() -> None:
    config = loads_config(f"""
[billing]
enabled = true
increment = "per_second"
increment_seconds = 5
first_block_minutes = 1
heartbeat_seconds = 1
low_balance_warning_minutes = 0
unmatched_calls = "refuse"

[billing.dropped_calls]
credit_last_minute = false
credit_whole_call_under_seconds = 0
{FACILITY}
[[billing.plans]]
caller = "kiosk-[0-9]+"
callee = "555.*"
facility = "county"
payers = ["A-1"]
""")
    b = config.billing
    assert (b.increment, b.increment_seconds, b.unmatched_calls) == ("per_second", 5, "refuse")
    assert b.plans[0].name == "plan-0" and b.plans[0].service == "video"
    assert b.plan_for("kiosk-1", "5551") is not None
    assert b.plan_for("kiosk-1x", "5551") is None  # the whole value must match
    assert b.policy().credit == CreditPolicy(False, 0) and b.policy().warning_seconds == 0
    assert b.facility("county") is not None and b.facility("nope") is None


@pytest.mark.parametrize(("text", "message"), [
    ("[billing]\nenabled = 1\n", "FILE:2: billing.enabled: expected true or false, got 1"),
    ("[billing]\nincrement = \"hourly\"\n",
     'FILE:2: billing.increment: expected one of "per_minute_round_up", "per_second", '
     'got "hourly"'),
    ("[billing]\nincrement_seconds = 120\nfirst_block_minutes = 1\n",
     "FILE:3: billing.first_block_minutes: expected at least one increment (120 s)"),
    ("[billing]\nbogus = 1\n", "FILE:2: billing.bogus: unknown key"),
    (FACILITY.replace('"0.19"', '"0.25"'),
     "FILE:2: billing.facilities[0]: facility 'county': video rate $0.25/min (in force from "
     "2026-04-06) is above the FCC cap of $0.19/min for Medium jails (ADP 350-999)"),
    (FACILITY.replace("per_minute", "price"), "FILE:10: billing.facilities[0].rate[0].price: "
     "unknown key"),
    ("[[billing.facilities]]\nid = \"x\"\n", "FILE:1: billing.facilities[0]: id, type and adp "
     "are required"),
    (FACILITY + "[[billing.plans]]\nfacility = \"jail\"\npayers = [\"A\"]\n",
     'FILE:12: billing.plans[0].facility: "jail" names no [[billing.facilities]] entry '
     "(facilities: county)"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\nservice = \"audio\"\n"
     "payers = [\"A\"]\n", 'FILE:13: billing.plans[0].service: facility "county" has no '
     "audio rate"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\n",
     "FILE:11: billing.plans[0].payers: expected a non-empty array"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\npayers = [\"A\", \"B\"]\n",
     "FILE:13: billing.plans[0].payers[0]: share is required when a plan has more than one"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\n"
     "payers = [{ account = \"A\", share = \"60\" }, { account = \"B\", share = \"30\" }]\n",
     "FILE:13: billing.plans[0].payers: the payers' shares must add up to exactly 100"),
    (FACILITY + "[[billing.plans]]\ncallee = \"(\"\nfacility = \"county\"\npayers = [\"A\"]\n",
     "FILE:12: billing.plans[0].callee: expected a Python regular expression"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\npayers = [\"no spaces\"]\n",
     "FILE:13: billing.plans[0].payers[0]: expected a billing account id"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\npayers = [\"A\"]\n"
     "free_minutes_per_day = -5\n",
     "FILE:14: billing.plans[0].free_minutes_per_day: expected an integer from 0 to 1440"),
    (FACILITY + "[[billing.plans]]\nfacility = \"county\"\npayers = [\"A\"]\n"
     "free_minutes_per_day = \"10\"\n",
     "FILE:14: billing.plans[0].free_minutes_per_day: expected an integer from 0 to 1440"),
])
def test_mistakes_are_reported_with_their_line(text: str, message: str) -> None:
    assert any(p.startswith(message) for p in problems(text)), problems(text)


# ---------------------------------------------------------------------- meters


def test_the_signalling_meter_counts_from_answer_to_end() -> None:
    now = [100.0]
    meter = SignallingMeter(lambda: now[0])
    assert meter.media_seconds("c") == 0.0 and meter.last_media_at("c") is None
    meter.answered("c", 100.0)
    now[0] = 112.5
    assert meter.media_seconds("c") == 12.5 and meter.last_media_at("c") == 112.5
    meter.ended("c", 130.0)
    now[0] = 500.0
    assert meter.media_seconds("c") == 30.0  # frozen at the end
    meter.forget("c")
    assert meter.media_seconds("c") == 0.0


def test_the_fake_meter_never_goes_backwards() -> None:
    meter = FakeMeter()
    meter.set("c", 10.0, at=5.0)
    assert (meter.media_seconds("c"), meter.last_media_at("c")) == (10.0, 5.0)
    with pytest.raises(ValueError):
        meter.set("c", 9.0)
