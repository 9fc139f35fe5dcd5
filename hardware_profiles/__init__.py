"""Built-in GPU profiles (package data, installed as iosim.hardware_profiles): one YAML file per GPU."""
