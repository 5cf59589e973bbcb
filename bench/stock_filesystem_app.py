"""The Celery app on kombu's own filesystem transport: the baseline of bench/embedded_broker.py only.

`celery -A bench.stock_filesystem_app worker` runs the same tasks and settings as the
embedded default, with the stock transport's folders under TIMBER_DATA_DIR/stock-broker.
"""

from __future__ import annotations

from bench.embedded_broker import stock_options
from timber_tasks.celery_app import make_celery
from timber_tasks.settings import Settings

settings = Settings.load(broker_url="filesystem://")
app = make_celery(settings)
app.conf.broker_transport_options = stock_options(settings)
