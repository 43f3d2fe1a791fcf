cd /work/main
taskset -c 0 .venv/bin/tensorflow_model_server --port=18500 --rest_api_port=18501 --model_name=pooch_predictor --model_base_path=/work/main/models/servables/small/pooch_predictor --grpc_max_threads=16 > /tmp/prof/server.log 2>&1 &
echo $! > /tmp/prof/server.pid
for i in $(seq 60); do curl -s localhost:18501/v1/models/pooch_predictor | grep -q AVAILABLE && break; sleep 1; done
echo started
