-- One server, two databases: the Optuna studies and the MLflow backend.
CREATE DATABASE optuna;
CREATE DATABASE mlflow;
