import { ApiProperty } from '@nestjs/swagger';
import { IsString, Matches } from 'class-validator';

export class CreateApiKeyDto {
  @ApiProperty({ type: String, description: 'who or what uses the key (shown as who answered an interruption)' })
  @IsString()
  @Matches(/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$/, {
    message: 'name must be letters, digits, spaces, ".", "_", "@" or "-" (at most 100)',
  })
  name: string;
}
