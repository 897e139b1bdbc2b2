"""Multi-step workflows (`workflows:` in the config): steps answered by models, Python functions
or HTTP services, run in order with their output streamed and their progress reported.

`runner.py` runs one workflow and yields typed events (`events.py`); the endpoints
(endpoints/workflows.py) write them in the native protocol or in the seed's front-end protocol
(formats/workflow.py).
"""
