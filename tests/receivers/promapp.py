"""A tiny service instrumented with prometheus_client, as the ML services are (test helper).

    python promapp.py PORT   -> serves /metrics until killed
"""

import sys
import time

from prometheus_client import Counter, Gauge, Histogram, Summary, start_http_server

requests = Counter("http_requests", "Requests served", ["route", "code"])
loss = Gauge("training_loss", "Current training loss", ["model_version"])
gpu = Gauge("gpu_memory_bytes", "GPU memory in use", unit="bytes")
latency = Histogram("inference_duration_seconds", "Inference latency", ["model"],
                    buckets=(0.01, 0.05, 0.1, 0.5))
payload = Summary("payload_size_bytes", "Request payload sizes")

requests.labels("/predict", "200").inc(41)
requests.labels("/predict", "500").inc(2)
loss.labels("v3").set(0.25)
gpu.set(2.5e9)
for value in (0.004, 0.02, 0.03, 0.2, 0.7):
    latency.labels("resnet").observe(value)
for size in (100, 300):
    payload.observe(size)

start_http_server(int(sys.argv[1]), addr="127.0.0.1")
while True:
    time.sleep(1)
