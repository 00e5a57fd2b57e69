"""A training job exposing `training_loss` with prometheus_client (test helper): noise around
0.25 until the file named by argv[2] exists, then around 0.5 (a regression).

    python lossapp.py PORT SHIFT_FILE
"""

import os
import random
import sys
import time

from prometheus_client import Gauge, start_http_server

shift_file = sys.argv[2]
loss = Gauge("training_loss", "Current training loss")
loss.set_function(lambda: random.gauss(0.5 if os.path.exists(shift_file) else 0.25, 0.01))
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
while True:
    time.sleep(1)
