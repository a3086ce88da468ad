"""The networks: Ada-DF's two-branch ResNet and the single ResNet (`networks`), SLM-AEA's anchored network (`aea`);
loading local pretrained weights.
"""
