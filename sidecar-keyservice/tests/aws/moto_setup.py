"""Sets up a moto server (started with INITIAL_NO_AUTH_ACTION_COUNT=11, so IAM is enforced
from the 12th request on) for the aws-kms tests; prints the ids as one JSON line.

Exactly 11 requests: a user with static keys and a least-privilege policy, an enabled and a
disabled symmetric key, a role the user may assume with KMS rights, one without them, and one
whose trust policy does not name the user.
"""
import json
import sys

import boto3

endpoint = sys.argv[1]
account = "123456789012"
kw = dict(endpoint_url=endpoint, region_name="us-west-2",
          aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
kms = boto3.client("kms", **kw)
user_arn = f"arn:aws:iam::{account}:user/veil"
# moto does not evaluate the Resource element of identity policies, so "*" here; the policy in
# docs/keys-aws-kms.md scopes each action to the one key ARN.
kms_actions = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
doc = lambda stmts: json.dumps({"Version": "2012-10-17", "Statement": stmts})
trust = doc([{"Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": "sts:AssumeRole"}])

iam.create_user(UserName="veil")  # 1
ak = iam.create_access_key(UserName="veil")["AccessKey"]  # 2
pol = iam.create_policy(PolicyName="veil-keyservice", PolicyDocument=doc([
    {"Effect": "Allow", "Action": kms_actions, "Resource": "*"},
    {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"},
]))["Policy"]["Arn"]  # 3
iam.attach_user_policy(UserName="veil", PolicyArn=pol)  # 4
key = kms.create_key(Description="veil KEK")["KeyMetadata"]["Arn"]  # 5
disabled_meta = kms.create_key(Description="veil KEK (disabled)")["KeyMetadata"]  # 6
disabled = disabled_meta["Arn"]
kms.disable_key(KeyId=disabled_meta["KeyId"])  # 7 (moto fails on an ARN here)
role = iam.create_role(RoleName="veil-kms", AssumeRolePolicyDocument=trust)["Role"]["Arn"]  # 8
iam.put_role_policy(RoleName="veil-kms", PolicyName="kms", PolicyDocument=doc([
    {"Effect": "Allow", "Action": kms_actions, "Resource": "*"}]))  # 9
denied = iam.create_role(RoleName="veil-denied", AssumeRolePolicyDocument=trust)["Role"]["Arn"]  # 10
other_trust = doc([{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/someone-else"},
                    "Action": "sts:AssumeRole"}])
untrusted = iam.create_role(RoleName="veil-untrusted", AssumeRolePolicyDocument=other_trust)["Role"]["Arn"]  # 11

print(json.dumps({
    "access_key_id": ak["AccessKeyId"], "secret_access_key": ak["SecretAccessKey"],
    "key": key, "disabled_key": disabled, "role": role, "denied_role": denied, "untrusted_role": untrusted,
}), flush=True)
