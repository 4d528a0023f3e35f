"""The generated client against a real server: register, report, batch-report, list the
deliveries, read the events feed. Every call goes through the generated code and its models;
each check names what it expects. Prints "N passed, M failed" and exits non-zero on failure."""

import os
import sys

from payhook_client import AuthenticatedClient
from payhook_client.api.deliveries import of_operation
from payhook_client.api.events import feed
from payhook_client.api.merchants import create
from payhook_client.api.operations import register, report_status, report_status_batch
from payhook_client.models import (
    BatchBody,
    BatchItem,
    BatchResults,
    CreateMerchant,
    DeliveryList,
    Error409,
    EventAccepted,
    EventFeed,
    MerchantCreated,
    OperationView,
    RegisterOperation,
    ReportBody,
    ReportedStatus,
)

client = AuthenticatedClient(base_url=os.environ["PAYHOOK_URL"], token=os.environ["PAYHOOK_ADMIN"])
checks = {"passed": 0, "failed": 0}


def check(what, ok, detail=""):
    checks["passed" if ok else "failed"] += 1
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"))


merchant = create.sync_detailed(
    client=client, body=CreateMerchant(name="Generated client shop", callback_url="https://shop.example/cb")
)
check("a merchant is created (201)", merchant.status_code == 201 and isinstance(merchant.parsed, MerchantCreated), merchant.content)
mid = merchant.parsed.id

ops = []
for n in range(3):
    r = register.sync_detailed(
        client=client,
        body=RegisterOperation(merchant_id=mid, external_id=f"gen-{n}", amount=1000 + n, currency="UAH", kind="purchase"),
    )
    check(f"operation gen-{n} is registered (201)", r.status_code == 201 and isinstance(r.parsed, OperationView), r.content)
    ops.append(r.parsed.id)

again = register.sync_detailed(
    client=client, body=RegisterOperation(merchant_id=mid, external_id="gen-0", amount=1000, currency="UAH", kind="purchase")
)
check("the same registration again is 200, the same operation", again.status_code == 200 and again.parsed.id == ops[0], again.content)

reported = report_status.sync_detailed(ops[0], client=client, body=ReportBody(status=ReportedStatus.SUCCESS))
check("a status report is accepted (202)", reported.status_code == 202 and isinstance(reported.parsed, EventAccepted), reported.content)
check("the event carries the status", reported.parsed.status == "success", reported.content)

refused = report_status.sync_detailed(ops[0], client=client, body=ReportBody(status=ReportedStatus.PENDING))
check("an invalid transition is a typed 409", refused.status_code == 409 and isinstance(refused.parsed, Error409), refused.content)
check("its code is invalid_transition", str(refused.parsed.error.code) == "invalid_transition", refused.content)

batch = report_status_batch.sync_detailed(
    client=client,
    body=BatchBody(items=[BatchItem(operation_id=ops[1], status="pending"), BatchItem(operation_id=ops[2], status="failed")]),
)
check("a batch is answered 200", batch.status_code == 200 and isinstance(batch.parsed, BatchResults), batch.content)
check("every item succeeded", all(item.ok for item in batch.parsed.results), batch.content)

deliveries = of_operation.sync_detailed(ops[0], client=client)
check("the deliveries list (200)", deliveries.status_code == 200 and isinstance(deliveries.parsed, DeliveryList), deliveries.content)
check("one delivery, for seq 1", [d.seq for d in deliveries.parsed.data] == [1], deliveries.content)

events = feed.sync_detailed(client=client, merchant_id=mid, after=0, limit=100)
check("the events feed (200)", events.status_code == 200 and isinstance(events.parsed, EventFeed), events.content)
statuses = [(e.operation_id, e.status) for e in events.parsed.data]
expected = [(ops[0], "created"), (ops[1], "created"), (ops[2], "created"), (ops[0], "success"), (ops[1], "pending"), (ops[2], "failed")]
check("the feed holds every event in order", statuses == expected, statuses)
later = feed.sync_detailed(client=client, merchant_id=mid, after=events.parsed.next_after, limit=100)
check("nothing after the last position", later.status_code == 200 and later.parsed.data == [], later.content)

print(f"{checks['passed']} passed, {checks['failed']} failed")
sys.exit(1 if checks["failed"] else 0)
