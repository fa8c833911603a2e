"""RSA-OAEP-256 decrypt (MGF1-SHA256, SHA-256, no label) of base64 argv[2] with the PEM key
argv[1]; prints the plaintext as hex. The azure-keyvault tests' independent check."""
import base64
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
ct = base64.b64decode(sys.argv[2])
print(key.decrypt(ct, padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()),
                                   algorithm=hashes.SHA256(), label=None)).hex())
