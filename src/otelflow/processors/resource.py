"""`resource` processor: insert, update, upsert, delete, hash, extract or convert resource
attributes, with the Go collector's `attributes:` list of actions. Runs once per resource
group, whatever the number of items under it."""

from __future__ import annotations

from pydantic import Field

from otelflow.component import Consumer, CreateSettings, Factory, Kind, Processor
from otelflow.config.types import ConfigModel
from otelflow.pdata import Batch
from otelflow.processors.attributes import ActionKeyValue, AttrActions, Toucher


class ResourceConfig(ConfigModel):
    attributes: list[ActionKeyValue] = Field(min_length=1)


def create(settings: CreateSettings, config: ResourceConfig,
           next_consumer: Consumer) -> ResourceProcessor:
    return ResourceProcessor(config, next_consumer)


FACTORY = Factory(Kind.PROCESSOR, "resource", ResourceConfig, create,
                  description="Change resource attributes")


class ResourceProcessor(Processor):
    mutates_data = True

    def __init__(self, config: ResourceConfig, next_consumer: Consumer):
        super().__init__(next_consumer)
        self.actions = AttrActions(config.attributes)

    async def consume(self, batch: Batch) -> None:
        self.process(batch)
        await self.next_consumer.consume(batch)

    def process(self, batch: Batch) -> None:
        touch = Toucher(batch)
        bound = self.actions.bind(batch.metadata)  # from_context: the request metadata
        for rx in getattr(batch.message, batch.signal.resource_field):
            self.actions.apply(rx.resource.attributes, touch, bound)
